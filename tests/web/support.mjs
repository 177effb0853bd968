// Shared by the dashboard tests and benchmarks: start a real `kiln up`, launch Chromium.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = new URL('../..', import.meta.url).pathname;
const TARGET = process.env.CARGO_TARGET_DIR ?? '/var/tmp/kiln-target';
export const BIN = process.env.KILN_BIN ?? join(TARGET, 'release/kiln');
export const SHOTS = process.env.KILN_SCREENSHOTS ?? join(ROOT, 'tests/web/screenshots');
export const TOKEN = 'kiln_e2e_dashboard_token';
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];


/** Init script: put the API token where the app keeps it (about:blank has no storage). */
export function signIn(token) {
  try { localStorage.setItem('kiln.token', token); } catch { /* about:blank */ }
}

/** Start `kiln up` on a free port; resolve with its URL once it prints it. */
export function startKiln(dir, extra = [], addr = '127.0.0.1:0') {
  const child = spawn(BIN, ['up', '--addr', addr, '--data-dir', dir,
    '--admin-token', TOKEN, '--static-dir', join(ROOT, 'web/dist'), ...extra], {
    cwd: ROOT, env: { ...process.env, BURN_DEVICE: 'flex', RUST_LOG: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`kiln up printed no URL:\n${out}`)), 60_000);
    const onData = (d) => {
      out += d;
      const m = out.match(/Kiln is up: (http:\/\/[^\s]+)/);
      if (m) { clearTimeout(timer); resolve({ child, url: m[1] }); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => { out += d; });
    child.on('exit', (code) => reject(new Error(`kiln up exited (${code}):\n${out}`)));
  });
}


/**
 * A `kiln up` on a fresh temp data dir and a signed-in Chromium context for it; page errors
 * (uncaught exceptions in the page and its workers) are collected in `errors`. `webgpu` adds
 * the flag that gives headless Chromium its SwiftShader WebGPU adapter.
 */
export async function startSession(name, { webgpu = false } = {}) {
  const { chromium } = await import('playwright-core');
  const { mkdtempSync, mkdirSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  mkdirSync(SHOTS, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), `kiln-${name}-e2e-`));
  const { child, url } = await startKiln(dataDir);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: webgpu ? [...CHROMIUM_ARGS, '--enable-unsafe-webgpu'] : CHROMIUM_ARGS,
  });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  await ctx.addInitScript(signIn, TOKEN);
  const errors = [];
  ctx.on('weberror', (e) => errors.push(e.error().message));
  return { kiln: child, base: url, dataDir, browser, ctx, errors };
}

/** Stop what `startSession` started and remove its data dir. */
export async function endSession(session) {
  const { rmSync } = await import('node:fs');
  await session?.browser?.close();
  session?.kiln?.kill('SIGTERM');
  if (session?.dataDir) rmSync(session.dataDir, { recursive: true, force: true });
}

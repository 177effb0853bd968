// Peer figure for BENCHMARKS.md (not CI): TensorFlow.js training Kiln's W1 model in headless
// Chromium, to set beside Kiln's own in-browser training numbers.
//
// What it measures, per backend, over N fresh page loads (each a NEW browser context and page,
// so the HTTP cache is empty and every bundle/.wasm is fetched and compiled again):
//   * W1 on the committed MNIST subset (data/mnist, 2000 images): dense 784→128 relu → dense 10
//     logits, softmax cross-entropy, Adam lr 1e-3, batch 64, a custom loop
//     `optimizer.minimize(() => loss, true)` with the loss read by `await loss.data()` after
//     EVERY step (a sync point per step; Kiln's loop reads the loss asynchronously per log step,
//     so this is, if anything, a little pessimistic for tfjs, mostly on webgpu). Batches are
//     assembled on the host from a fixed-seed shuffle and uploaded each step.
//   * samples_per_sec: 10 warm-up steps, then S timed steps: S*64 / seconds.
//   * first_step_ms: navigation start (performance.timeOrigin) → end of the first training
//     step (loss read back). Includes fetching tfjs (~1.1 MB JS) + backend bundle + .wasm and the
//     6.3 MB float32 data set over loopback, backend init, model build.
//   * infer_ms: one image, model.predict on a [1,784] tensor + await data(); median of 50 after 5
//     warm-up.
//   * loss_first / loss_last: mean loss of the first / last 10 steps of the timed window; the
//     run fails unless it falls.
//   * backend actually in use (tf.getBackend()); for wasm: SIMD, threads and thread count, and
//     which .wasm binary was fetched; for webgpu: the adapter (SwiftShader, a CPU Vulkan
//     implementation, in headless Chromium without a GPU: a functional check, not GPU speed).
// Backends: wasm (tfjs's own thread choice: the server sends COOP/COEP so the page is
// cross-origin isolated, SharedArrayBuffer exists and tfjs loads its threaded SIMD build, which
// also starts a pool of pthread workers at init; its XNNPACK pool is
// max(1, navigator.hardwareConcurrency / 2) threads and setThreadsCount(n) is capped at that
// too, so 1 on a 2-CPU machine), wasm-1thread (tf.wasm.setThreadsCount(1) before setBackend:
// comparable with Kiln's single-threaded side), wasm-nocoi (the page is served WITHOUT
// COOP/COEP, so no SharedArrayBuffer and tfjs falls back to its non-threaded SIMD build),
// webgpu, cpu (the plain-JS tfjs backend, for reference only). One discarded page load warms
// the browser up before anything is timed. Each run records the 1-minute load average at its
// start and end: on a shared machine, read the numbers with it.
//
// Run:   (cd tests/web/peers/tfjs && npm ci && node bench.mjs)
// Env:   TFJS_RUNS (5) TFJS_STEPS (200) TFJS_WEBGPU_STEPS (50) TFJS_CPU_STEPS (TFJS_STEPS)
//        TFJS_BACKENDS (wasm,wasm-1thread,wasm-nocoi,webgpu,cpu) TFJS_TIMEOUT_S (600 per page)
//        TFJS_COI=0 (no COOP/COEP on any page: no SharedArrayBuffer, so no wasm threads)
//        CHROMIUM (/usr/bin/chromium)
// Output: one JSON object per backend on stdout (progress on stderr), all of them in
// results.json next to this file (gitignored). playwright-core comes from tests/web's install.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '../../../..');
const { chromium } = createRequire(join(ROOT, 'tests/web/node_modules/'))('playwright-core');

const RUNS = Number(process.env.TFJS_RUNS ?? 5);
const STEPS = Number(process.env.TFJS_STEPS ?? 200);
const WEBGPU_STEPS = Number(process.env.TFJS_WEBGPU_STEPS ?? 50);
const CPU_STEPS = Number(process.env.TFJS_CPU_STEPS ?? STEPS);
const TIMEOUT_MS = Number(process.env.TFJS_TIMEOUT_S ?? 600) * 1000;
const COI = process.env.TFJS_COI !== '0';
const BATCH = 64;
const WARMUP = 10;
const CONFIGS = {
  'wasm': { backend: 'wasm', steps: STEPS },
  'wasm-1thread': { backend: 'wasm', steps: STEPS, threads: 1 },
  'wasm-nocoi': { backend: 'wasm', steps: STEPS, coi: false, note: 'page not cross-origin isolated: no SharedArrayBuffer, so tfjs loads its non-threaded SIMD build' },
  'webgpu': { backend: 'webgpu', steps: WEBGPU_STEPS },
  'cpu': { backend: 'cpu', steps: CPU_STEPS, note: 'plain-JS tfjs cpu backend: reference only, not a target' },
};
const LABELS = (process.env.TFJS_BACKENDS ?? 'wasm,wasm-1thread,wasm-nocoi,webgpu,cpu').split(',').map((s) => s.trim()).filter(Boolean);
for (const l of LABELS) if (!CONFIGS[l]) throw new Error(`unknown backend ${l}; known: ${Object.keys(CONFIGS)}`);

const log = (...a) => console.error(...a);
const median = (xs) => { const s = xs.filter((x) => x != null).sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : null; };

// ---- MNIST subset (IDX) → float32 pixels / 255 and uint8 labels.
function idx(file, magic) {
  const b = gunzipSync(readFileSync(join(ROOT, 'data/mnist', file)));
  if (b.readUInt32BE(0) !== magic) throw new Error(`${file}: magic ${b.readUInt32BE(0)} != ${magic}`);
  return b;
}
const imgs = idx('train-images-idx3-ubyte.gz', 2051);
const labs = idx('train-labels-idx1-ubyte.gz', 2049);
const N = imgs.readUInt32BE(4);
if (imgs.readUInt32BE(8) !== 28 || imgs.readUInt32BE(12) !== 28 || labs.readUInt32BE(4) !== N) throw new Error('unexpected IDX shapes');
const pixels = new Float32Array(N * 784);
for (let i = 0; i < N * 784; i++) pixels[i] = imgs[16 + i] / 255;
const IMAGES = Buffer.from(pixels.buffer);
const LABELS_BUF = Buffer.from(labs.subarray(8, 8 + N));

// ---- Static server: the page, the tfjs dist bundles, the wasm binaries, the data.
const TF = join(HERE, 'node_modules/@tensorflow');
const DIRS = {
  tfjs: join(TF, 'tfjs/dist'),
  'tfjs-wasm': join(TF, 'tfjs-backend-wasm/dist'),
  'tfjs-webgpu': join(TF, 'tfjs-backend-webgpu/dist'),
};
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm', '.map': 'application/json' };
const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const path = url.pathname;
  const headers = { 'cache-control': 'no-store', 'cross-origin-resource-policy': 'same-origin' };
  // Cross-origin isolation is decided by the document's headers (subresources need only CORP).
  if (path === '/tfjs.html' && COI && url.searchParams.get('coi') !== '0') Object.assign(headers, {
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-embedder-policy': 'require-corp',
  });
  let body = null;
  let type = 'application/octet-stream';
  try {
    if (path === '/tfjs.html') { body = readFileSync(join(HERE, 'tfjs.html')); type = TYPES['.html']; }
    else if (path === '/data/images.f32') body = IMAGES;
    else if (path === '/data/labels.u8') body = LABELS_BUF;
    else {
      const m = path.match(/^\/([\w-]+)\/([\w.-]+)$/);
      if (m && DIRS[m[1]] && !m[2].startsWith('.')) {
        body = readFileSync(join(DIRS[m[1]], m[2]));
        type = TYPES[m[2].slice(m[2].lastIndexOf('.'))] ?? type;
      }
    }
  } catch { body = null; }
  if (path === '/favicon.ico') { res.writeHead(204, headers).end(); return; }
  if (!body) { log(`  [server] 404 ${path}`); res.writeHead(404, headers).end(); return; }
  res.writeHead(200, { ...headers, 'content-type': type, 'content-length': body.length }).end(body);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const BASE = `http://127.0.0.1:${server.address().port}`;

// ---- Browser.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-dev-shm-usage', '--enable-unsafe-webgpu'],
});
const chromiumVersion = browser.version();
const tfjsVersion = JSON.parse(readFileSync(join(TF, 'tfjs/package.json'), 'utf8')).version;
log(`tfjs ${tfjsVersion}, Chromium ${chromiumVersion}, ${cpus().length} CPUs, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}; ` +
  `${RUNS} fresh page loads per backend, batch ${BATCH}, ${WARMUP} warm-up steps; COOP/COEP ${COI ? 'on' : 'off'}; ${BASE}`);

async function onePage(cfg) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('pageerror', (e) => log(`  [pageerror] ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') log(`  [console.${m.type()}] ${m.text()}`); });
  const q = new URLSearchParams({ backend: cfg.backend, steps: cfg.steps, warmup: WARMUP, batch: BATCH });
  if (cfg.threads != null) q.set('threads', cfg.threads);
  if (cfg.coi === false) q.set('coi', '0');
  let timer;
  try {
    await page.goto(`${BASE}/tfjs.html?${q}`);
    return await Promise.race([
      page.evaluate(() => window.__done),
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`page timed out after ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS); }),
    ]);
  } catch (e) {
    return { error: String(e.message ?? e) };
  } finally {
    clearTimeout(timer);
    await ctx.close();
  }
}

// One discarded page load first, so that starting the browser's helper processes is not
// charged to the first measured run.
await onePage({ backend: 'cpu', steps: 1 });

const results = [];
let failed = false;
for (const label of LABELS) {
  const cfg = CONFIGS[label];
  const runs = [];
  const tb = Date.now();
  for (let i = 0; i < RUNS; i++) {
    const load0 = loadavg()[0];
    const r = await onePage(cfg);
    r.loadavg_1m = [load0, loadavg()[0]]; // others' CPU use (this box may be shared): start, end
    if (!r.error && !(r.loss_first > r.loss_last)) r.error = `loss did not fall: first-10 mean ${r.loss_first}, last-10 mean ${r.loss_last}`;
    if (!r.error && r.backend !== cfg.backend) r.error = `backend in use is ${r.backend}, wanted ${cfg.backend}`;
    runs.push(r);
    if (r.error) { failed = true; log(`${label} run ${i + 1}/${RUNS}: FAILED: ${r.error}`); continue; }
    log(`${label} run ${i + 1}/${RUNS}: ${r.samples_per_sec.toFixed(0)} samples/s (${r.ms_per_step.toFixed(2)} ms/step), ` +
      `first step ${r.first_step_ms.toFixed(0)} ms, infer ${r.infer_ms.toFixed(3)} ms, ` +
      `loss ${r.loss_first.toFixed(4)} → ${r.loss_last.toFixed(4)}` +
      (r.wasm ? `, wasm ${r.wasm.binary.join('+')} simd=${r.wasm.simd} threads=${r.wasm.threads_count}` : '') +
      (r.webgpu?.adapter ? `, adapter ${r.webgpu.adapter.vendor}/${r.webgpu.adapter.architecture}${r.webgpu.adapter.is_fallback_adapter ? ' (fallback)' : ''}` : ''));
  }
  const ok = runs.filter((r) => !r.error);
  const pick = (k) => median(ok.map((r) => r[k]));
  const first = ok[0] ?? {};
  const summary = {
    label,
    backend: first.backend ?? null,
    note: cfg.note,
    steps: cfg.steps, warmup: WARMUP, batch: BATCH, examples: N,
    loss_read: 'await loss.data() after every step (Kiln: asynchronous read per log step)',
    runs_ok: ok.length, runs_total: runs.length,
    median: {
      samples_per_sec: pick('samples_per_sec'),
      ms_per_step: pick('ms_per_step'),
      first_step_ms: pick('first_step_ms'),
      infer_ms: pick('infer_ms'),
      loss_first: pick('loss_first'),
      loss_last: pick('loss_last'),
      // navigation start → these points, ms (first_step_ms is the last of them)
      scripts_loaded_ms: median(ok.map((r) => r.marks.scripts_loaded)),
      backend_ready_ms: median(ok.map((r) => r.marks.backend_ready)),
      data_ready_ms: median(ok.map((r) => r.marks.data_ready)),
    },
    samples_per_sec: runs.map((r) => r.samples_per_sec ?? null),
    first_step_ms: runs.map((r) => r.first_step_ms ?? null),
    infer_ms: runs.map((r) => r.infer_ms ?? null),
    loss_first: runs.map((r) => r.loss_first ?? null),
    loss_last: runs.map((r) => r.loss_last ?? null),
    wasm: first.wasm,
    webgpu: first.webgpu && {
      ...first.webgpu,
      note: first.webgpu.adapter?.architecture === 'swiftshader'
        ? 'SwiftShader (software Vulkan on the CPU), as expected in headless Chromium without a GPU: proves the path works, says nothing about GPU speed'
        : undefined,
    },
    cross_origin_isolated: first.cross_origin_isolated,
    hardware_concurrency: first.hardware_concurrency,
    wall_s: (Date.now() - tb) / 1000,
    loadavg_after: loadavg(),
    runs,
  };
  results.push(summary);
  console.log(JSON.stringify(summary));
}
await browser.close();
server.close();

const wall = process.uptime(); // whole process: data prep, browser launch, every page
writeFileSync(join(HERE, 'results.json'), JSON.stringify({
  date: new Date().toISOString(),
  tfjs: tfjsVersion,
  chromium: chromiumVersion,
  node: process.version,
  cpus: cpus().length,
  cross_origin_isolation_headers: COI,
  runs_per_backend: RUNS,
  wall_s: wall,
  results,
}, null, 2) + '\n');
log(`\nmedians over ${RUNS} fresh page loads (full run ${wall.toFixed(1)} s):`);
for (const r of results) {
  const m = r.median;
  const f = (x, d) => (x == null ? 'n/a' : x.toFixed(d));
  log(`  ${r.label.padEnd(13)} ${f(m.samples_per_sec, 0).padStart(7)} samples/s  first step ${f(m.first_step_ms, 0).padStart(6)} ms  ` +
    `infer ${f(m.infer_ms, 3)} ms  loss ${f(m.loss_first, 3)} → ${f(m.loss_last, 3)}  [${r.backend ?? 'failed'}, ${r.runs_ok}/${r.runs_total} ok]`);
}
log(`wrote ${join(HERE, 'results.json')}`);
process.exit(failed ? 1 : 0);

// The in-browser trainer's Web Worker: hands the page's messages (`kiln_proto::trainer`) to
// the kiln-trainer wasm module. Training runs here, off the page's main thread; WebGPU is
// available in dedicated workers. Started by the page as `new Worker(url, { type: 'module' })`.
//
// Two builds of the module: `kiln_trainer_cpu` (Burn's CPU backend only: small, and it can
// resume checkpoints, since Burn loads optimizer state on its default device) and
// `kiln_trainer_webgpu` (adds WebGPU). A `cpu` run takes the first; `webgpu` and `auto` runs
// and a lent tab the second when this browser gives a WebGPU adapter, else the first, told
// why (`no_gpu`).

// A turn of this worker's event loop without setTimeout's 4 ms clamp: the trainer awaits it
// every few milliseconds so that a stop message gets in.
const channel = new MessageChannel();
const waiting = [];
channel.port1.onmessage = () => waiting.shift()?.();
const tick = () => new Promise((resolve) => {
  waiting.push(resolve);
  channel.port2.postMessage(0);
});

const emit = (json, parts) => {
  const bytes = Array.from(parts);
  self.postMessage({ json, bytes }, bytes.map((b) => b.buffer));
};
const fail = (error) => emit(JSON.stringify({ type: 'failed', error }), []);

const modules = {};
const load = (kind) => {
  modules[kind] ??= import(`./kiln_trainer_${kind}.js`).then(async (m) => {
    await m.default();
    return m;
  });
  return modules[kind];
};

async function whyNoGpu() {
  if (!self.navigator.gpu) return 'this browser has no WebGPU (no navigator.gpu)';
  try {
    const adapter = await self.navigator.gpu.requestAdapter();
    return adapter ? null : 'this browser gave no WebGPU adapter';
  } catch (e) {
    return `this browser's WebGPU adapter request failed: ${e}`;
  }
}

// Messages are taken in order; a run is started, not awaited, so a stop gets through. A
// `stop` goes to the module of the last `train`, an `unlend` to that of the last `lend`.
let chain = Promise.resolve();
let training = null;
let lending = null;
self.onmessage = ({ data: { json, bytes } }) => {
  chain = chain.then(async () => {
    try {
      const message = JSON.parse(json);
      if (message.type === 'stop') return training?.handle(json, [], emit, tick);
      if (message.type === 'unlend') return lending?.handle(json, [], emit, tick);
      let kind = 'cpu';
      // A prediction runs on the CPU module: small, quick to load, and exact.
      if (message.type !== 'predict' && message.device !== 'cpu') {
        const why = await whyNoGpu();
        if (why) message.no_gpu = why;
        else kind = 'webgpu';
      }
      const module = await load(kind);
      if (message.type === 'lend') lending = module;
      else if (message.type === 'train') training = module;
      module.handle(JSON.stringify(message), bytes ?? [], emit, tick);
    } catch (e) {
      fail(`the trainer module did not load: ${e}`);
    }
  });
};
emit(JSON.stringify({ type: 'ready' }), []);

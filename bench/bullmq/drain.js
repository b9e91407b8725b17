// Drain N pre-enqueued no-op jobs (100-byte payload) at a given concurrency;
// report jobs/s and Redis CPU microseconds per job lifecycle (INFO cpu),
// measured the same way as `taskherd bench`.
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const port = Number(process.argv[2]); const N = Number(process.argv[3] || 50000); const conc = Number(process.argv[4] || 100);
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
async function cpu(r) { const t = await r.info('cpu'); const g = k => Number(t.match(new RegExp(k + ':([0-9.]+)'))[1]); return g('used_cpu_sys') + g('used_cpu_user'); }
(async () => {
  const r = new IORedis(connection); await r.flushall();
  const q = new Queue('bench', { connection });
  const pad = 'x'.repeat(70);
  const cpu0 = await cpu(r);
  for (let i = 0; i < N; i += 100) {
    await q.addBulk(Array.from({ length: 100 }, (_, j) => ({ name: 'noop', data: { seq: i + j, pad }, opts: { removeOnComplete: false } })));
  }
  let done = 0; const t0 = Date.now();
  await new Promise(resolve => {
    const w = new Worker('bench', async () => {}, { connection, concurrency: conc });
    w.on('completed', () => { if (++done === N) { resolve(); w.close(); } });
  });
  const secs = (Date.now() - t0) / 1000; const cpu1 = await cpu(r);
  console.log(JSON.stringify({ bullmq: require('bullmq/package.json').version, concurrency: conc, tasks: N, tasksPerSec: Math.round(N / secs), redisCpuMicrosPerLifecycle: Math.round((cpu1 - cpu0) * 1e6 / N * 10) / 10 }));
  await q.close(); await r.quit(); process.exit(0);
})();

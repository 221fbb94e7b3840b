// The benchmark's pm2 client: one long-lived node process holding pm2's programmatic API
// (the API the `pm2` CLI is built on), so that no client start-up is timed, as with the
// in-process clients of supervisord and circus.
//
//     node _pm2.js PM2_PACKAGE_DIR REPLY_FD      (PM2_HOME in the environment)
//
// Connects at once (launching the daemon in PM2_HOME if it is not up) and answers
// {"ok": true} on REPLY_FD; then reads one JSON request a line on stdin, {"op": OP,
// "arg": ARG}, and answers each on REPLY_FD with {"ok": true, "value": ...} or
// {"ok": false, "error": "..."}.  Replies do not use stdout: pm2 prints its messages there.
// At the end of stdin it disconnects and exits (the daemon stays, like after the CLI).
'use strict';

const fs = require('fs');
const readline = require('readline');

const pm2 = require(process.argv[2]);
const replyFd = Number(process.argv[3]);

function reply(err, value) {
  const msg = err ? { ok: false, error: describe(err) } : { ok: true, value: value === undefined ? null : value };
  fs.writeSync(replyFd, JSON.stringify(msg) + '\n');
}

function describe(err) {
  if (err instanceof Error) return err.message;
  if (Array.isArray(err)) return err.map(describe).join('; ');
  return typeof err === 'string' ? err : JSON.stringify(err);
}

const ops = {
  // `pm2 start ecosystem.config.js`: ARG is the file; the value is how many were launched.
  start: (arg, done) => pm2.start(arg, (err, procs) => done(err, procs && procs.length)),
  // `pm2 stop all`: returns once pm2 has seen every program exit (or SIGKILLed it).
  stop: (arg, done) => pm2.stop(arg, (err) => done(err)),
  // `pm2 jlist`, cut down to what the benchmark reads.
  list: (arg, done) => pm2.list((err, procs) => done(err, procs && procs.map(
    (p) => ({ name: p.name, pid: p.pid, status: p.pm2_env && p.pm2_env.status })))),
  // `pm2 kill`: deletes every program (stopping it) and ends the daemon.
  kill: (arg, done) => pm2.killDaemon((err) => done(err)),
};

pm2.connect((err) => {
  reply(err);
  if (err) process.exit(1);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let req;
    try {
      req = JSON.parse(line);
    } catch (e) {
      return reply(e);
    }
    const op = ops[req.op];
    if (!op) return reply(`unknown op ${req.op}`);
    try {
      op(req.arg, reply);
    } catch (e) {
      reply(e);
    }
  });
  rl.on('close', () => pm2.disconnect(() => process.exit(0)));
});

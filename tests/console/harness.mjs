// Shared pieces of the console tests: the `ferry` CLI as an admin client, TOTP codes, Chromium launched the
// way run.sh documents, polling with deadlines, and screenshots.
//
// TLS: Chromium is not told to ignore certificate errors in general. It gets
// --ignore-certificate-errors-spki-list=<sha256 of the server certificate's public key>, which accepts exactly
// Ferry's key and nothing else (any other certificate still fails). Adding Ferry's CA as a trust anchor would
// need an NSS database (certutil from libnss3-tools) in a throw-away HOME; the SPKI pin needs no extra package
// and pins more narrowly. Before pinning, the test checks with Node's TLS stack that the server really presents
// that key in a chain that verifies against Ferry's CA (root-credentials.json), so the pin is not taken on faith.

import { execFile, spawn } from 'node:child_process';
import { createHash, createHmac, X509Certificate } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { chromium } from 'playwright-core';

export const env = {
  bin: process.env.FERRY_BIN_DIR,
  work: process.env.FERRY_CONSOLE_WORK,
  dataDir: process.env.FERRY_CONSOLE_DATA_DIR,
  endpoint: process.env.FERRY_CONSOLE_ENDPOINT,
  artifacts: process.env.FERRY_CONSOLE_ARTIFACTS,
  chromium: process.env.CHROMIUM || '/usr/bin/chromium',
};
for (const [k, v] of Object.entries(env)) {
  if (!v) throw new Error(`${k} is not set: run the console tests through tests/console/run.sh`);
}

const VERSIONS = { smc: '2019-06-01', ecs: '2014-05-26', ram: '2015-05-01', sts: '2015-04-01', actiontrail: '2020-07-06' };

/** Calls an action with the root credentials through `ferry call` (a real signed API request). */
export function ferry(product, action, params = {}) {
  const args = ['call', action, '--api-version', VERSIONS[product], '--data-dir', env.dataDir, '--output', 'json'];
  for (const [k, v] of Object.entries(params)) args.push(`${k}=${v}`);
  return new Promise((resolve, reject) => {
    // A private HOME: the CLI must not pick up a profile from the developer's ~/.ferry/config.json.
    execFile(join(env.bin, 'ferry'), args, { env: { ...process.env, HOME: env.work }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`ferry call ${action} failed: ${stderr || err.message}`));
        return;
      }
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`ferry call ${action} printed no JSON: ${stdout.slice(0, 300)}`));
      }
    });
  });
}

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
function base32Decode(s) {
  const clean = s.replace(/=+$/, '').replace(/\s+/g, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const idx = B32.indexOf(ch);
    if (idx < 0) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** The RFC 6238 code (HMAC-SHA1, 30 s, 6 digits) of a base32 seed for time step `step`. */
export function totp(seedB32, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32Decode(seedB32)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 1_000_000).padStart(6, '0');
}

export const stepNow = () => Math.floor(Date.now() / 1000 / 30);

export function rootCredentials() {
  const creds = JSON.parse(readFileSync(join(env.dataDir, 'root-credentials.json'), 'utf8'));
  if (creds.version !== 1) throw new Error(`unknown root-credentials.json format ${creds.version}`);
  return creds;
}

/** base64(sha256(SPKI)) of the certificate the server presents, verified against Ferry's CA first. */
export async function serverSpki() {
  const creds = rootCredentials();
  const ca = readFileSync(creds.ca_cert, 'utf8');
  const url = new URL(env.endpoint);
  const cert = await new Promise((resolve, reject) => {
    const sock = tls.connect({ host: url.hostname, port: Number(url.port), ca, servername: undefined }, () => {
      const c = sock.getPeerX509Certificate();
      sock.end();
      resolve(c);
    });
    sock.on('error', (e) => reject(new Error(`TLS to ${env.endpoint} does not verify against Ferry's CA: ${e.message}`)));
  });
  if (!(cert instanceof X509Certificate)) throw new Error('the server presented no certificate');
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** A headless Chromium with a fresh profile, pinned to the server's key. */
export async function launch(name, viewport = { width: 1366, height: 900 }, extra = {}) {
  const spki = await serverSpki();
  const profile = mkdtempSync(join(env.work || tmpdir(), `chromium-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: env.chromium,
    headless: true,
    viewport,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--ignore-certificate-errors-spki-list=${spki}`,
    ],
    ...extra,
  });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: env.endpoint });
  return context;
}

/** Polls `check` until it returns something truthy; fails naming `what` after `timeoutMs`. */
export async function waitFor(what, check, timeoutMs = 60_000, intervalMs = 250) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
}

export async function screenshot(page, name) {
  mkdirSync(env.artifacts, { recursive: true });
  await page.screenshot({ path: join(env.artifacts, `${name}.png`), fullPage: true });
}

/** Starts a process (the agent) with its output appended to `logPath`; returns the child. */
export function startProcess(argv, logPath) {
  const fd = openSync(logPath, 'a');
  return spawn(argv[0], argv.slice(1), { stdio: ['ignore', fd, fd], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
}

/** A raw disk image of `mib` MiB filled with incompressible data (so a bandwidth limit shows in the run). */
export function makeDisk(path, mib, seed) {
  const fd = openSync(path, 'w');
  let block = createHash('sha256').update(`seed-${seed}`).digest();
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < mib; i += 1) {
    for (let off = 0; off < chunk.length; off += 32) {
      block = createHash('sha256').update(block).digest();
      block.copy(chunk, off);
    }
    writeSync(fd, chunk);
  }
  closeSync(fd);
  return path;
}

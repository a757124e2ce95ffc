// The console scenarios, run in order against one server (run.sh starts it and setup.mjs creates the users):
//   1. sign-in with MFA (a wrong code is refused, the right TOTP code lets the admin in);
//   2. a full migration driven only from the console: activation code -> copied agent command (run by the
//      test) -> source appears -> job wizard -> start -> live progress without reloading -> Finished -> image
//      -> test instance -> an incremental job cut over;
//   3. a read-only user's denied action shows the RAM error (Forbidden.RAM) and a suggested fix;
//   4. every page rendered, with a screenshot each (overview in a desktop and a phone viewport), keyboard
//      and phone-navigation checks, and the policy editor's validation.
// Any uncaught page error or CSP violation in any page fails the run.
//
// Usage (through run.sh): node scenarios.mjs [substring of a scenario name]

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, launch, waitFor, screenshot, totp, stepNow, startProcess, makeDisk, ferry } from './harness.mjs';

const users = JSON.parse(readFileSync(join(env.work, 'users.json'), 'utf8'));
const only = process.argv[2] || '';
const pageProblems = [];
const children = [];
const state = {};

function watchPage(page, label) {
  page.on('pageerror', (e) => pageProblems.push(`${label}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const text = m.text();
    // Denied calls and signed-out probes answer 4xx on purpose; the browser logs each as a failed load.
    if (/Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    pageProblems.push(`${label}: console error: ${text}`);
  });
}

async function open(context, label) {
  const page = context.pages()[0] || (await context.newPage());
  watchPage(page, label);
  return page;
}

async function go(page, route) {
  await page.goto(`${env.endpoint}/console/#${route}`);
  await page.waitForSelector('#page-title', { timeout: 30_000 });
  await page.waitForFunction(() => !document.querySelector('#page .loading'), null, { timeout: 30_000 });
}

async function signIn(page, user, mfa) {
  await page.goto(`${env.endpoint}/console/`);
  await page.waitForFunction(() => window.location.hash === '#/signin', null, { timeout: 30_000 });
  await page.fill('#signin-user', user.userName);
  await page.fill('#signin-password', user.password);
  await page.click('#signin-submit');
  if (mfa) await mfa(page);
  await page.waitForSelector('#who-user', { timeout: 30_000 });
}

async function badgeText(page, selector) {
  const el = await page.$(`${selector} .badge`);
  return el ? (await el.textContent()).trim() : '';
}

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('sign-in with MFA', async () => {
  state.admin = await launch('admin');
  const page = await open(state.admin, 'admin');
  await page.goto(`${env.endpoint}/console/`);
  await page.waitForFunction(() => window.location.hash === '#/signin', null, { timeout: 30_000 });
  await screenshot(page, 'signin');
  await signIn(page, users.admin, async (p) => {
    await p.waitForSelector('#signin-mfa', { state: 'visible', timeout: 15_000 });
    // A code three steps ahead is outside the accepted window: it must be refused with InvalidMFACode.
    await p.fill('#signin-mfa', totp(users.admin.mfaSeed, stepNow() + 3));
    await p.click('#signin-submit');
    await p.waitForSelector('#signin-errors .error-code', { timeout: 15_000 });
    const code = (await p.textContent('#signin-errors .error-code')).trim();
    if (code !== 'InvalidMFACode') throw new Error(`a wrong MFA code gave ${code}, not InvalidMFACode`);
    // Codes are single-use: take a step after the ones BindMFADevice consumed.
    const step = Math.max(stepNow(), users.admin.mfaBoundStep + 1);
    await p.fill('#signin-mfa', totp(users.admin.mfaSeed, step));
    await p.click('#signin-submit');
  });
  const who = (await page.textContent('#who-user')).trim();
  if (who !== 'ConsoleAdmin') throw new Error(`signed in as "${who}", expected ConsoleAdmin`);
  await page.waitForFunction(() => window.location.hash === '#/overview', null, { timeout: 15_000 });
});

async function createJob(page, sourceId, opts) {
  await go(page, `/jobs/new?source=${sourceId}`);
  await page.selectOption('#wiz-source', sourceId);
  await page.fill('#wiz-name', opts.name);
  await page.click('#wiz-next');
  await page.fill('#wiz-image-name', `${opts.name}-image`);
  await page.click('#wiz-next');
  await page.selectOption('#wiz-mode', opts.incremental ? 'incremental' : 'once');
  if (opts.incremental) await page.fill('#wiz-frequency', '24');
  await page.click('#wiz-next');
  await page.fill('#wiz-bandwidth', String(opts.bandwidthKBps));
  await page.selectOption('#wiz-compress', '0');
  await page.click('#wiz-next');
  if (opts.screenshot) await screenshot(page, opts.screenshot);
  await page.click('#wiz-create');
  await page.waitForFunction(() => /^#\/jobs\/j-/.test(window.location.hash), null, { timeout: 30_000 });
  return (await page.evaluate(() => window.location.hash)).slice('#/jobs/'.length);
}

scenario('full migration from the console', async () => {
  const page = await open(state.admin, 'admin');
  await go(page, '/activation-codes');
  await page.click('#code-create');
  await page.fill('#code-name', 'wave-one');
  await page.fill('#code-count', '5');
  await page.click('dialog button[type=submit]');
  await page.waitForSelector('#new-code .copy-text', { timeout: 30_000 });
  const shown = (await page.textContent('#new-code .copy-text')).trim();
  await page.click('#new-code button.copy');
  const copied = (await page.evaluate(() => navigator.clipboard.readText())).trim();
  if (copied !== shown) throw new Error(`the clipboard holds ${JSON.stringify(copied)}, the page shows ${JSON.stringify(shown)}`);
  if (!copied.startsWith(`ferry-agent activate --server ${env.endpoint} --code `)) throw new Error(`unexpected agent command: ${copied}`);
  await screenshot(page, 'activation-codes');

  // Run the copied command as an operator would, on a raw disk image standing in for the server's disk.
  const agentDir = join(env.work, 'agent');
  mkdirSync(agentDir, { recursive: true });
  const disk = makeDisk(join(agentDir, 'disk.img'), 96, 1);
  const argv = copied.split(/\s+/);
  if (argv[0] !== 'ferry-agent') throw new Error(`the command does not start with ferry-agent: ${copied}`);
  argv[0] = join(env.bin, 'ferry-agent');
  argv.push('--state-dir', join(agentDir, 'state'), '--disk-image', disk);
  const agent = startProcess(argv, join(agentDir, 'agent.log'));
  children.push(agent);

  await go(page, '/sources');
  const sourceId = await waitFor('the source to appear as Available on the sources page', async () => {
    const row = await page.$('table tbody tr:has(.badge:text-is("Available"))');
    return row ? (await (await row.$('code')).textContent()).trim() : null;
  }, 90_000);
  state.sourceId = sourceId;
  await screenshot(page, 'sources');
  await page.click(`a[href="#/sources/${sourceId}"]`);
  await page.waitForSelector('text=Disks and partitions');
  await page.waitForSelector('#heartbeat');
  await screenshot(page, 'source-detail');

  // One-time job: 96 MiB of incompressible data at 8 MiB/s takes long enough to watch it run.
  const jobId = await createJob(page, sourceId, { name: 'web01-once', bandwidthKBps: 8192, screenshot: 'job-wizard-review' });
  await page.evaluate(() => { window.__sameDocument = true; });
  const seen = { running: false, midProgress: false, throughput: false, eta: false };
  await waitFor(`job ${jobId} to finish`, async () => {
    const status = await badgeText(page, '#job-status');
    const progress = Number(await page.getAttribute('#job-progress', 'value'));
    const thr = (await page.textContent('#job-throughput')).trim();
    const eta = (await page.textContent('#job-eta')).trim();
    if (status === 'Running') seen.running = true;
    if (progress > 0 && progress < 100) seen.midProgress = true;
    if (status === 'Running' && /[1-9]/.test(thr) && thr.endsWith('/s')) seen.throughput = true;
    if (status === 'Running' && eta !== '—') seen.eta = true;
    if (status === 'InError') throw new Error(`job ${jobId} failed: ${await page.textContent('#job-error')}`);
    if (status === 'Running' && seen.throughput && !state.shotRunning) {
      state.shotRunning = true;
      await screenshot(page, 'job-detail-running');
    }
    return status === 'Finished';
  }, 300_000, 200);
  if (!(await page.evaluate(() => window.__sameDocument === true))) throw new Error('the job page reloaded: live updates must not reload');
  if (!seen.running || !seen.midProgress || !seen.throughput) throw new Error(`live progress was not shown while the job ran: ${JSON.stringify(seen)}`);
  await screenshot(page, 'job-detail');
  const imageId = (await page.textContent('#job-image')).trim();
  if (!imageId.startsWith('m-')) throw new Error(`the finished job shows no image: ${imageId}`);
  state.imageId = imageId;

  await go(page, '/images');
  await page.waitForSelector(`[data-image="${imageId}"]`);
  await screenshot(page, 'images');
  await page.click(`[data-key="launch-${imageId}"]`);
  await page.click('dialog button[type=submit]');
  await page.waitForFunction(() => /^#\/instances\/i-/.test(window.location.hash), null, { timeout: 60_000 });
  await waitFor('the test instance to be Running', async () => (await badgeText(page, '#instance-status')) === 'Running', 180_000);
  await screenshot(page, 'instance-detail');
  state.instanceId = (await page.evaluate(() => window.location.hash)).slice('#/instances/'.length);

  // An incremental job on the same source: the first sync, then a cut over with a final sync.
  await waitFor('the source to be Available again', async () => {
    const r = await ferry('smc', 'DescribeSourceServers', { 'SourceId.1': sourceId });
    return r.SourceServers.SourceServer[0].State === 'Available';
  }, 60_000);
  const incId = await createJob(page, sourceId, { name: 'web01-incremental', incremental: true, bandwidthKBps: 0 });
  await waitFor(`incremental job ${incId} to wait for its next sync`, async () => {
    const s = await badgeText(page, '#job-status');
    if (s === 'InError') throw new Error(`job ${incId} failed: ${await page.textContent('#job-error')}`);
    return s === 'Waiting';
  }, 300_000);
  await page.click(`[data-key="cutover-${incId}-detail"]`);
  await page.click('dialog button[type=submit]');
  await waitFor(`incremental job ${incId} to finish after the cut over`, async () => (await badgeText(page, '#job-status')) === 'Finished', 300_000);
  const runs = await page.$$eval('table tbody tr', (rows) => rows.length);
  if (runs < 2) throw new Error(`the cut over job shows ${runs} runs; expected the first sync and the final one`);
  await screenshot(page, 'job-detail-cutover');
});

scenario('read-only user is denied', async () => {
  const ctx = await launch('viewer');
  state.viewer = ctx;
  const page = await open(ctx, 'viewer');
  await signIn(page, users.viewer);
  await go(page, '/sources');
  if (state.sourceId) await page.waitForSelector(`a[href="#/sources/${state.sourceId}"]`);
  await go(page, '/activation-codes');
  await page.click('#code-create');
  await page.click('dialog button[type=submit]');
  await page.waitForSelector('dialog .error-box', { timeout: 30_000 });
  const code = (await page.textContent('dialog .error-box .error-code')).trim();
  const box = await page.textContent('dialog .error-box');
  if (code !== 'Forbidden.RAM') throw new Error(`the denied action shows ${code}, not Forbidden.RAM: ${box}`);
  if (!box.includes('smc:CreateAccessToken')) throw new Error(`the denial does not name the action: ${box}`);
  if (!box.includes('Suggested fix')) throw new Error('the denial has no suggested fix');
  await screenshot(page, 'denied-read-only');
  await page.keyboard.press('Escape');
  await ctx.close();
  state.viewer = null;
});

scenario('every page, phone and keyboard', async () => {
  const page = await open(state.admin, 'admin');
  if (state.sourceId) {
    const wg = await ferry('smc', 'CreateWorkgroup', { Name: 'wave-one' });
    await ferry('smc', 'AssociateSourceServers', { WorkgroupId: wg.WorkgroupId, 'SourceId.1': state.sourceId });
  }
  const pages = [
    ['/overview', 'overview-desktop'], ['/sources', 'sources-list'], ['/jobs', 'jobs'], ['/jobs/new', 'job-wizard'],
    ['/images', 'images-list'], ['/snapshots', 'snapshots'], ['/instances', 'instances'], ['/workgroups', 'workgroups'],
    ['/activation-codes', 'activation-codes-list'], ['/ram/users', 'ram-users'], ['/ram/policies', 'ram-policies'], ['/audit', 'audit'],
  ];
  for (const [route, shot] of pages) {
    await go(page, route);
    if (route === '/workgroups' && state.sourceId) {
      await page.waitForSelector(`section:has(h2:text-is("wave-one")) a[href="#/sources/${state.sourceId}"]`);
      await page.waitForSelector('svg.chart title:text-is("Average migration progress per workgroup")', { state: 'attached' });
    }
    if (route === '/overview') {
      const online = (await page.textContent('#stat-online')).trim();
      if (state.sourceId && online !== '1') throw new Error(`the overview shows ${online} sources online, expected 1`);
    }
    const err = await page.$('#page .error-box');
    if (err && route !== '/jobs/new') throw new Error(`${route} shows an error: ${await err.textContent()}`);
    await screenshot(page, shot);
  }
  if (state.instanceId) {
    await go(page, `/instances/${state.instanceId}`);
    await page.waitForSelector('#console-log');
    await screenshot(page, 'instance-console-log');
  }

  // Export an image from its card; the task shows up Finished and the file is where the task says.
  if (state.imageId) {
    await go(page, '/images');
    await page.click(`[data-key="export-${state.imageId}"]`);
    await page.fill('#export-prefix', 'console/');
    await page.selectOption('#export-format', 'qcow2');
    await page.click('dialog button[type=submit]');
    await waitFor('the export task to finish', async () => (await page.$$('section:has(h2:text-is("Export tasks")) tbody .badge:text-is("Finished")')).length === 1, 180_000);
    const file = join(env.dataDir, 'buckets', 'exports', 'console', `${state.imageId}_disk0.qcow2`);
    if (!existsSync(file)) throw new Error(`the export task finished but ${file} does not exist`);
    await screenshot(page, 'images-exported');
  }

  // The audit trail: a filter by action finds the console's own CreateAccessToken call.
  await go(page, '/audit');
  await page.selectOption('#audit-key', 'EventName');
  await page.fill('#audit-value', 'CreateAccessToken');
  await page.click('#audit-apply');
  await waitFor('audit events for CreateAccessToken', async () => (await page.$$('#audit-results tbody tr')).length > 0, 20_000);
  await screenshot(page, 'audit-filtered');

  // The policy editor validates as you type and refuses to submit an invalid document.
  await go(page, '/ram/policies');
  await page.click('#policy-create');
  await page.fill('#policy-name', 'ConsoleTestPolicy');
  await page.fill('#policy-doc', '{"Version":"1","Statement":[{"Effect":"Permit","Action":"smc","Resource":"*"}]}');
  await page.waitForSelector('#policy-problems .error-box');
  const problems = await page.textContent('#policy-problems');
  if (!problems.includes('Effect') || !problems.includes('smc')) throw new Error(`the editor missed problems: ${problems}`);
  await screenshot(page, 'policy-editor-invalid');
  await page.fill('#policy-doc', '{"Version":"1","Statement":[{"Effect":"Allow","Action":"smc:Describe*","Resource":"*"}]}');
  await page.waitForSelector('#policy-problems .tone-ok');
  await page.click('dialog button[type=submit]');
  await page.waitForSelector('dialog', { state: 'detached' });
  await page.waitForSelector('text=ConsoleTestPolicy');

  // The RAM user page shows a user's keys and policies.
  await go(page, '/ram/users');
  await page.click('[data-key="manage-console-admin"]');
  await page.waitForSelector('#user-detail >> text=AdministratorAccess');
  await screenshot(page, 'ram-user-detail');

  // Keyboard: the first Tab reaches the skip link, which moves focus to the content.
  await page.goto('about:blank');
  await go(page, '/overview');
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement && document.activeElement.className);
  if (first !== 'skip-link') throw new Error(`the first Tab stop is "${first}", not the skip link`);
  await page.keyboard.press('Enter');
  await waitFor('focus to move to the main content', () => page.evaluate(() => document.activeElement && document.activeElement.id === 'main'), 5_000);

  // Phone: the navigation collapses behind the Menu button and opens from the keyboard.
  await page.setViewportSize({ width: 390, height: 844 });
  await go(page, '/overview');
  if (await page.isVisible('#nav')) throw new Error('on a phone the navigation should be collapsed');
  await screenshot(page, 'overview-phone');
  await page.focus('#nav-toggle');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#nav', { state: 'visible' });
  if ((await page.getAttribute('#nav-toggle', 'aria-expanded')) !== 'true') throw new Error('the Menu button does not say it is expanded');
  await screenshot(page, 'overview-phone-menu');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#nav', { state: 'hidden' });
  await page.setViewportSize({ width: 1366, height: 900 });

  // Signing out returns to the sign-in page, and the console's API refuses the old session.
  await page.click('#signout');
  await page.waitForFunction(() => window.location.hash === '#/signin');
});

let failed = 0;
try {
  for (const s of scenarios) {
    if (only && !s.name.includes(only)) continue;
    const t0 = Date.now();
    try {
      await s.fn();
      console.log(`ok   ${s.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${s.name}: ${e.stack || e.message}`);
      for (const ctx of [state.admin, state.viewer]) {
        const p = ctx && ctx.pages()[0];
        if (p) await screenshot(p, `failure-${s.name.replace(/\W+/g, '-')}`).catch(() => {});
      }
    }
  }
} finally {
  for (const c of children) {
    if (c.exitCode === null) c.kill('SIGTERM');
  }
  for (const ctx of [state.admin, state.viewer]) if (ctx) await ctx.close().catch(() => {});
}
if (pageProblems.length) {
  failed += 1;
  console.log(`FAIL page errors:\n  ${pageProblems.join('\n  ')}`);
}
console.log(failed ? `${failed} console scenario(s) failed; screenshots in ${env.artifacts}` : `all console scenarios passed; screenshots in ${env.artifacts}`);
process.exit(failed ? 1 : 0);

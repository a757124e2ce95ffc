// Creates the console tests' RAM users with the root credentials (through the `ferry` CLI):
// * `console-admin`: AdministratorAccess, a console password and a bound virtual MFA device;
// * `console-viewer`: read-only SMC and ECS policies and a console password, no MFA.
// Writes them (with the MFA seed) to $FERRY_CONSOLE_WORK/users.json (mode 0600) for scenarios.mjs.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { env, ferry, totp, stepNow } from './harness.mjs';

const admin = { userName: 'console-admin', password: 'Adm1n-console-pass!' };
const viewer = { userName: 'console-viewer', password: 'V1ewer-console-pass!' };

await ferry('ram', 'CreateUser', { UserName: admin.userName, DisplayName: 'ConsoleAdmin' });
await ferry('ram', 'AttachPolicyToUser', { PolicyType: 'System', PolicyName: 'AdministratorAccess', UserName: admin.userName });
await ferry('ram', 'CreateLoginProfile', { UserName: admin.userName, Password: admin.password, MFABindRequired: 'true' });
const dev = await ferry('ram', 'CreateVirtualMFADevice', { VirtualMFADeviceName: 'console-admin-mfa' });
const seed = dev.VirtualMFADevice && dev.VirtualMFADevice.Base32StringSeed;
if (!seed) throw new Error(`CreateVirtualMFADevice gave no Base32StringSeed: ${JSON.stringify(dev)}`);
// Two consecutive codes, the later one the current step's: sign-in then uses the next step, which the
// server accepts (one step of drift) and which has not been used yet.
const s = stepNow();
await ferry('ram', 'BindMFADevice', {
  SerialNumber: dev.VirtualMFADevice.SerialNumber,
  UserName: admin.userName,
  AuthenticationCode1: totp(seed, s - 1),
  AuthenticationCode2: totp(seed, s),
});
admin.mfaSeed = seed;
admin.mfaBoundStep = s;

await ferry('ram', 'CreateUser', { UserName: viewer.userName, DisplayName: 'ConsoleViewer' });
for (const p of ['AliyunSMCReadOnlyAccess', 'AliyunECSReadOnlyAccess']) {
  await ferry('ram', 'AttachPolicyToUser', { PolicyType: 'System', PolicyName: p, UserName: viewer.userName });
}
await ferry('ram', 'CreateLoginProfile', { UserName: viewer.userName, Password: viewer.password });

writeFileSync(join(env.work, 'users.json'), JSON.stringify({ admin, viewer }, null, 2), { mode: 0o600 });
console.log(`created RAM users ${admin.userName} (AdministratorAccess, MFA) and ${viewer.userName} (read-only)`);

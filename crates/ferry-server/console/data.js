// Data helpers over the API: whole lists across pages, the region, and the figures several pages share.

import { call, list } from './api.js';

/** Every item of a page-numbered list action (PageSize 50), up to `limit` items. */
export async function all(product, action, params, outer, inner, limit = 1000) {
  const out = [];
  for (let page = 1; out.length < limit; page += 1) {
    const r = await call(product, action, { ...params, PageNumber: page, PageSize: 50 });
    const items = list(r, outer, inner);
    out.push(...items);
    const total = Number(r.TotalCount);
    if (!items.length || !Number.isFinite(total) || out.length >= total) break;
  }
  return out;
}

let region = null;
/** The server's region (Ferry serves one; DescribeRegions names it). */
export async function regionId() {
  if (region) return region;
  const r = await call('ecs', 'DescribeRegions', {});
  const regions = list(r, 'Regions', 'Region');
  region = regions.length ? regions[0].RegionId : 'local';
  return region;
}

export const sources = () => all('smc', 'DescribeSourceServers', {}, 'SourceServers', 'SourceServer');
export const jobs = () => all('smc', 'DescribeReplicationJobs', {}, 'ReplicationJobs', 'ReplicationJob');
export const workgroups = () => all('smc', 'DescribeWorkgroups', {}, 'Workgroups', 'Workgroup');

export async function images() {
  return all('ecs', 'DescribeImages', { RegionId: await regionId(), Status: 'ALL', ImageOwnerAlias: 'self' }, 'Images', 'Image');
}

export async function instances() {
  return all('ecs', 'DescribeInstances', { RegionId: await regionId() }, 'Instances', 'Instance');
}

export async function snapshots() {
  return all('ecs', 'DescribeSnapshots', { RegionId: await regionId() }, 'Snapshots', 'Snapshot');
}

/** The runs of a job, oldest first. */
export function runs(job) {
  return list(job, 'ReplicationJobRuns', 'ReplicationJobRun');
}

/** The run in progress (no EndTime), if any. */
export function currentRun(job) {
  const rs = runs(job);
  const open = rs.filter((r) => !r.EndTime);
  return open.length ? open[open.length - 1] : null;
}

/** When an incremental job runs next: ScheduledStartTime if set, else the last run's end + Frequency. */
export function nextSync(job) {
  if (job.ScheduledStartTime && (job.Status === 'Ready' || job.Status === 'Waiting')) return new Date(job.ScheduledStartTime);
  if (job.Status === 'Waiting' && job.Frequency) {
    const rs = runs(job).filter((r) => r.EndTime);
    const last = rs.length ? new Date(rs[rs.length - 1].EndTime) : null;
    if (last && !Number.isNaN(last.getTime())) return new Date(last.getTime() + job.Frequency * 3600 * 1000);
  }
  return null;
}

/** A source is online when its agent heart-beat within three intervals (the server's own offline rule). */
export function online(src) {
  return src.State !== 'Unavailable' && src.State !== 'Deleting';
}

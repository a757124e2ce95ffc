-- Ferry schema v7: leases for background work shared by several `ferry server` replicas (docs/scale-out.md),
-- and the replica that runs each instance. Portable SQL (SQLite and PostgreSQL): TEXT and BIGINT only; times
-- are unix seconds.

-- A lease on one unit of background work (`build:<run_id>`, `task:<task_id>`, `qcow2:<image_id>:<disk>`,
-- `scheduler`, `offline-detector`, …). `holder` is `<replica id>#<process incarnation>`. The lease is held
-- while `expires_at` is in the future; a released lease has `expires_at` 0. `fencing` grows by one at every
-- acquisition, so a holder that lost its lease cannot renew or release the next holder's. `previous_holder` is
-- the holder whose unreleased lease the current holder took over (NULL after a release or on first use).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    fencing BIGINT NOT NULL,
    previous_holder TEXT,
    acquired_at BIGINT NOT NULL
);

-- Every acquisition of a lease, append-only apart from `worked`: the evidence that a dead replica's lease
-- was taken over (`previous_holder` set) rather than shared, and of how often each unit of work really ran.
-- `worked` (0/1) is set when the holder found its work still to do and started it (an acquisition that finds
-- the work done by the previous holder leaves it 0).
CREATE TABLE lease_events (
    name TEXT NOT NULL,
    fencing BIGINT NOT NULL,
    holder TEXT NOT NULL,
    previous_holder TEXT,
    acquired_at BIGINT NOT NULL,
    worked BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name, fencing)
);

-- The replica (`<data>/replica-id`) whose QEMU runs the instance: only that replica manages it. NULL for
-- instances recorded before this migration; the first replica to look adopts them.
ALTER TABLE instances ADD COLUMN replica TEXT;

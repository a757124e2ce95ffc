//! Measures what the chunk size costs and buys, to choose `DEFAULT_CHUNK_SIZE` (results and reasoning:
//! docs/formats.md).
//!
//! `cargo run --release -p ferry-chunk --example chunk_size [SAMPLE_MIB]` (default 512)
//!
//! On a generated, seeded disk-like sample (regions of text-like data, random data and zeros, 64 KiB to
//! 16 MiB each, 4 KiB aligned), for 256 KiB, 1 MiB and 4 MiB chunks it reports:
//! - agent throughput: zero test + BLAKE3 + zstd-1 encode, one core, over the whole sample;
//! - server throughput: decode + verify of every stored blob, one core;
//! - compression: non-zero raw bytes / stored bytes, and the bytes a full run sends;
//! - objects per GiB of non-zero data (what an S3 backend pays per request);
//! - incremental resend: 1% of the sample changes in 1 MiB extents at random 4 KiB-aligned positions;
//!   bytes of the chunks touched, mean over 1000 trials, and that over the bytes changed.
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the right report

use std::collections::HashSet;
use std::time::Instant;

use ferry_chunk::{decode, encode_with_digest, hash, is_zero};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

const WORDS: &[&str] = &[
    "the",
    "kernel",
    "systemd",
    "started",
    "session",
    "user",
    "root",
    "eth0",
    "link",
    "up",
    "GET",
    "/api/v1/items",
    "200",
    "404",
    "nginx",
    "postgres",
    "INFO",
    "WARN",
    "ERROR",
    "connection",
    "accepted",
    "from",
    "10.0.0.",
    "port",
    "pid",
    "memory",
    "config",
    "value",
    "true",
    "false",
    "null",
    "{\"id\":",
    "\"name\":",
    "<div class=\"row\">",
    "</div>",
    "function",
    "return",
    "int",
    "static",
    "void",
    "import",
    "package",
    "lib",
    "usr",
    "share",
    "locale",
    "en_US.UTF-8",
];

fn fill_text(rng: &mut StdRng, out: &mut [u8]) {
    let mut i = 0;
    while i < out.len() {
        // Log-like lines: a timestamp-ish number, then words.
        let mut line = format!(
            "2024-05-{:02}T{:06} ",
            rng.gen_range(1..29),
            rng.gen_range(0..240000)
        );
        for _ in 0..rng.gen_range(4..14) {
            line.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
            if rng.gen_bool(0.2) {
                line.push_str(&rng.gen_range(0..100000).to_string());
            }
            line.push(' ');
        }
        line.push('\n');
        let n = line.len().min(out.len() - i);
        out[i..i + n].copy_from_slice(&line.as_bytes()[..n]);
        i += n;
    }
}

/// The sample and the share of text, random and zero bytes in it.
fn sample(size: usize) -> (Vec<u8>, [usize; 3]) {
    let mut rng = StdRng::seed_from_u64(0x0f3e_77a1);
    let mut data = vec![0u8; size];
    let mut kinds = [0usize; 3];
    let mut pos = 0;
    while pos < size {
        // Log-uniform region length between 64 KiB and 16 MiB, 4 KiB aligned.
        let exp = rng.gen_range(16.0..24.0f64);
        let len = ((2f64.powf(exp) as usize) & !(4 * KIB - 1)).min(size - pos);
        let region = &mut data[pos..pos + len];
        let kind = match rng.gen_range(0..10) {
            0..=3 => 0,
            4..=6 => 1,
            _ => 2,
        };
        match kind {
            0 => fill_text(&mut rng, region),
            1 => rng.fill(region),
            _ => {}
        }
        kinds[kind] += len;
        pos += len;
    }
    (data, kinds)
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let size = mib * MIB;
    let t = Instant::now();
    let (data, kinds) = sample(size);
    println!(
        "sample: {mib} MiB ({:.0}% text-like, {:.0}% random, {:.0}% zeros), generated in {:.1}s",
        kinds[0] as f64 * 100.0 / size as f64,
        kinds[1] as f64 * 100.0 / size as f64,
        kinds[2] as f64 * 100.0 / size as f64,
        t.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "| chunk | agent hash+zstd-1 MiB/s | server verify MiB/s | zero chunks | ratio | full run sends MiB | objects/GiB | 1% change resends MiB | amplification |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");

    for chunk_size in [256 * KIB, MIB, 4 * MIB] {
        let t = Instant::now();
        let mut blobs = Vec::new();
        let mut zero_chunks = 0usize;
        let mut nonzero_raw = 0usize;
        for chunk in data.chunks(chunk_size) {
            if is_zero(chunk) {
                zero_chunks += 1;
                continue;
            }
            let d = hash(chunk);
            nonzero_raw += chunk.len();
            blobs.push((d, encode_with_digest(chunk, &d, 1)));
        }
        let agent_secs = t.elapsed().as_secs_f64();

        let t = Instant::now();
        for (d, blob) in &blobs {
            std::hint::black_box(decode(blob, d).unwrap());
        }
        let server_secs = t.elapsed().as_secs_f64();

        let stored: usize = blobs.iter().map(|(_, b)| b.len()).sum();
        let objects_per_gib = blobs.len() as f64 / (nonzero_raw as f64 / (1024.0 * MIB as f64));

        let mut rng = StdRng::seed_from_u64(42);
        let extents = size / 100 / MIB;
        let trials = 1000;
        let mut resent = 0usize;
        for _ in 0..trials {
            let mut touched = HashSet::new();
            for _ in 0..extents {
                let start = rng.gen_range(0..(size - MIB) / (4 * KIB)) * 4 * KIB;
                for c in start / chunk_size..=(start + MIB - 1) / chunk_size {
                    touched.insert(c);
                }
            }
            resent += touched
                .iter()
                .map(|c| chunk_size.min(size - c * chunk_size))
                .sum::<usize>();
        }
        let resent_mib = resent as f64 / trials as f64 / MIB as f64;
        println!(
            "| {} KiB | {:.0} | {:.0} | {} of {} | {:.2} | {:.1} | {:.0} | {:.1} | {:.2}x |",
            chunk_size / KIB,
            size as f64 / MIB as f64 / agent_secs,
            nonzero_raw as f64 / MIB as f64 / server_secs,
            zero_chunks,
            data.len().div_ceil(chunk_size),
            nonzero_raw as f64 / stored as f64,
            stored as f64 / MIB as f64,
            objects_per_gib,
            resent_mib,
            resent_mib / extents as f64,
        );
    }
}

//! End to end on the lab (issue 4): a real Debian server of each lab variant (crates/ferry-test-utils/src/lab)
//! is migrated by the real agent and server, and must boot on Ferry's target.
//!
//! Per variant: the agent replicates the lab disk images → the image is built and verified → adapted →
//! boot-validated under QEMU (TCG) with the user's own checks: the marker line appears on the console, the
//! data file written on the source has the same SHA-256 inside the migrated server, every fstab filesystem is
//! mounted, and the source's static address became a DHCP lease (while the static settings stay on record in
//! the adaptation report). A test instance is launched from the first run while the job goes on. Then a file
//! changes on the source, the job is cut over with a final sync (a pre-cutover hook of the source's owner runs
//! first), and the final image's instance has the change; finishing the job removes the test instance. The BIOS
//! variant cuts over onto a production instance instead (`TargetType=TargetInstance`): Ferry re-disks it with
//! the final image, starts it and validates it in place.
//!
//! Needs root (loop devices, mounts), debootstrap and QEMU; skips with a message otherwise. The lab images
//! are cached (target/lab-cache), so only the first run pays for building them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use ferry_test_utils::lab::{self, LabServer, LabVariant};
use ferry_test_utils::stack::{KillQemus, OneSource, p, wait_job};
use ferry_test_utils::wait_for;
use serde_json::{Value, json};

/// Generous: a TCG boot takes about a minute alone, several when the two cores are shared.
const BOOT_WAIT: Duration = Duration::from_secs(1200);
/// The file the test changes on the source before the cutover.
const CHANGED: &str = "/etc/ferry-e2e-change";

fn skip(test: &str) -> bool {
    let root = nix_is_root();
    let tools = ["debootstrap", "qemu-system-x86_64", "losetup"]
        .iter()
        .all(|t| which(t));
    if !root || !tools {
        eprintln!(
            "SKIPPED {test}: needs root, debootstrap and qemu-system-x86_64 (run scripts/test.sh as root)"
        );
        return true;
    }
    false
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The user's checks every validation of the job runs (docs/boot-validation.md): the data file's checksum
/// and the content of the file the cutover changes (absent before).
fn checks(lab: &LabServer) -> String {
    json!({
        "commands": [
            {"name": "data file", "command": format!("sha256sum {}", lab.facts.data_file),
             "expect_exit": 0, "expect_output": lab.facts.data_sha256},
            {"name": "changed file", "command": format!("cat {CHANGED} 2>/dev/null || echo absent"),
             "expect_exit": 0},
        ]
    })
    .to_string()
}

fn runs(j: &Value) -> Vec<Value> {
    j["ReplicationJobRuns"]["ReplicationJobRun"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn image(s: &OneSource, image_id: &str) -> anyhow::Result<Value> {
    let v = s
        .client
        .ecs(
            "DescribeImages",
            &p(&[("RegionId", "local"), ("ImageId", image_id)]),
        )
        .await?;
    v["Images"]["Image"]
        .get(0)
        .cloned()
        .with_context(|| format!("image {image_id} not listed: {v}"))
}

/// Waits until the image's validation has ended and returns the image.
async fn validated(s: &OneSource, image_id: &str) -> anyhow::Result<Value> {
    wait_for(BOOT_WAIT, "the image's boot validation", || async {
        let img = image(s, image_id).await?;
        Ok(match img["ValidationStatus"].as_str() {
            Some("Passed" | "Failed" | "Skipped") => Some(img),
            _ => None,
        })
    })
    .await
}

/// The checks of an image's validation report, by name.
fn check<'a>(img: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    img["ValidationReport"]["Checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["Name"] == name))
        .with_context(|| format!("no check {name:?} in {}", img["ValidationReport"]))
}

/// The output the guest printed for one of the user's commands.
fn command_output(img: &Value, name: &str) -> anyhow::Result<String> {
    img["ValidationReport"]["Report"]["boot"]["commands"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .and_then(|c| c["output"].as_str())
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("no output of {name:?} in {}", img["ValidationReport"]))
}

/// Everything issue 4 asks of a migrated image's first boot.
fn assert_migrated_boot(lab: &LabServer, img: &Value) -> anyhow::Result<()> {
    let report = &img["ValidationReport"];
    ensure!(
        img["ValidationStatus"] == "Passed",
        "{}: validation did not pass: {}",
        lab.variant.as_str(),
        summarize(report)
    );
    for name in [
        "kernel-booted",
        "default-target-reached",
        "no-failed-units",
        "network-dhcp-lease",
        "report-over-network",
        "filesystems-mounted",
        "command:data file",
    ] {
        ensure!(
            check(img, name)?["Passed"] == true,
            "{name} failed: {}",
            summarize(report)
        );
    }
    let console = report["Report"]["console_tail"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        console.contains(&lab.facts.marker),
        "the marker line {:?} is not on the console:\n{console}",
        lab.facts.marker
    );
    // The static configuration became DHCP on the target NIC, and stays on record.
    let boot = &report["Report"]["boot"];
    let dhcp = boot["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["dhcp"] == true && i["addresses"].to_string().contains("10.0.2.15"));
    ensure!(
        dhcp,
        "no DHCP address on the target: {}",
        boot["interfaces"]
    );
    let static_ip = lab
        .facts
        .static_address
        .split('/')
        .next()
        .unwrap_or_default();
    ensure!(
        !boot["interfaces"].to_string().contains(static_ip),
        "the source's static address is still configured: {}",
        boot["interfaces"]
    );
    let adaptation = &img["AdaptationReport"];
    ensure!(
        adaptation["Report"]["source_network"]
            .to_string()
            .contains(static_ip),
        "the source's static settings are not on record: {adaptation}"
    );
    let kinds: Vec<&str> = adaptation["Report"]["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    for kind in ["network", "agent", "probe"] {
        ensure!(kinds.contains(&kind), "no {kind} change in {adaptation}");
    }
    ensure!(
        img["BootMode"] == lab.facts.boot_mode,
        "boot mode {} for a {} lab server",
        img["BootMode"],
        lab.facts.boot_mode
    );
    Ok(())
}

fn summarize(report: &Value) -> String {
    let checks: Vec<String> = report["Checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{}={} ({})", c["Name"], c["Passed"], c["Detail"]))
        .collect();
    let console = report["Report"]["console_tail"]
        .as_str()
        .unwrap_or_default();
    let tail: String = console
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "status {} error {} checks [{}]\n--- console tail ---\n{tail}",
        report["Status"],
        report["Error"],
        checks.join(", ")
    )
}

async fn instance(s: &OneSource, id: &str) -> anyhow::Result<Value> {
    let v = s
        .client
        .ecs(
            "DescribeInstances",
            &p(&[
                ("RegionId", "local"),
                ("InstanceIds", &json!([id]).to_string()),
            ]),
        )
        .await?;
    Ok(v["Instances"]["Instance"]
        .get(0)
        .cloned()
        .unwrap_or(Value::Null))
}

async fn migrate(variant: LabVariant, target: Target) -> anyhow::Result<()> {
    let name = format!("migrate_{}", variant.as_str());
    if skip(&name) {
        return Ok(());
    }
    let started = Instant::now();
    let lab = lab::build(variant).await?;
    eprintln!("{name}: lab ready in {:?}", started.elapsed());
    let tmp = tempfile::tempdir()?;
    let disks = lab::copy_disks(&lab, &tmp.path().join("source"))?;
    let disk_refs: Vec<&Path> = disks.iter().map(PathBuf::as_path).collect();
    let mut s = OneSource::start(
        &tmp.path().join("server"),
        &tmp.path().join("agent"),
        &disk_refs,
    )
    .await?;
    let _kill = KillQemus(s.server.data_dir.clone());
    let hooks = tmp.path().join("hooks");
    let hook_log = tmp.path().join("hook.log");
    std::fs::create_dir_all(hooks.join("pre-cutover.d"))?;
    let hook = hooks.join("pre-cutover.d/10-stop-app");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"stopping the app before the final sync\"\necho ran >> {}\n",
            hook_log.display()
        ),
    )?;
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    s.restart_agent_with_hooks(&hooks)?;

    // 1. Replicate, build, verify, adapt, validate. With a production instance (`Target::Instance`), a
    //    first one-shot job delivers the image the production instance is launched from, as an operator
    //    would prepare the target before the incremental job that cuts over onto it.
    let checks = checks(&lab);
    let mut job_params = vec![
        ("SourceId", s.agent.source_id.clone()),
        ("RegionId", "local".to_owned()),
        ("ImageName", format!("lab-{}", variant.as_str())),
        ("ValidationChecks", checks.clone()),
    ];
    let t0 = Instant::now();
    let (image1, instance_id) = match target {
        Target::Image => {
            job_params.extend([
                ("RunOnce", "false".to_owned()),
                ("Frequency", "24".to_owned()),
                ("MaxNumberOfImageToKeep", "3".to_owned()),
            ]);
            (None, None)
        }
        Target::Instance => {
            let job_a = create_and_start(&s, &job_params).await?;
            let j = wait_job(&s.client, &job_a, &["Finished", "InError"], BOOT_WAIT).await?;
            ensure!(j["Status"] == "Finished", "the one-shot job failed: {j}");
            let image_a = j["ImageId"].as_str().context("ImageId")?.to_owned();
            let img_a = validated(&s, &image_a).await?;
            assert_migrated_boot(&lab, &img_a)?;
            let prod = run_instance(&s, &image_a).await?;
            wait_for_marker(&s, &prod, &lab).await?;
            job_params.extend([
                ("RunOnce", "false".to_owned()),
                ("Frequency", "24".to_owned()),
                ("MaxNumberOfImageToKeep", "2".to_owned()),
                ("TargetType", "TargetInstance".to_owned()),
                ("InstanceId", prod.clone()),
            ]);
            (Some(image_a), Some(prod))
        }
    };
    let job_id = create_and_start(&s, &job_params).await?;
    let j = wait_job(&s.client, &job_id, &["Waiting", "InError"], BOOT_WAIT).await?;
    ensure!(
        j["Status"] == "Waiting",
        "the first run did not complete: {j}"
    );
    let run1_image = runs(&j)[0]["ImageId"]
        .as_str()
        .context("run 1 has no image")?
        .to_owned();
    let img1 = validated(&s, &run1_image).await?;
    eprintln!(
        "{name}: replicated, built, adapted and validated in {:?}",
        t0.elapsed()
    );
    assert_migrated_boot(&lab, &img1)?;
    ensure!(
        command_output(&img1, "changed file")? == "absent",
        "the file changed later is already there"
    );
    // The source was never touched: its disks still equal the lab's.
    for (copy, orig) in disks.iter().zip(&lab.disks) {
        ensure!(
            ferry_test_utils::stack::same_bytes(copy, orig)?,
            "migration changed the source disk {}",
            copy.display()
        );
    }

    // 2. A test instance from the first run while the job goes on (the production instance already
    //    showed a launch from an image for `Target::Instance`).
    let test_instance = match target {
        Target::Image => Some(run_instance(&s, &run1_image).await?),
        Target::Instance => None,
    };

    // 3. A change on the source, then the cutover with a final sync.
    let change = format!(
        "changed on the source before the cutover of {}\n",
        variant.as_str()
    );
    lab::modify_file(&disks[0], variant, CHANGED, change.as_bytes())?;
    let t1 = Instant::now();
    s.client
        .smc(
            "CutOverReplicationJob",
            &p(&[("JobId", &job_id), ("SyncData", "true")]),
        )
        .await?;
    if let Some(test) = &test_instance {
        // The test instance boots meanwhile: its console shows the marker.
        wait_for_marker(&s, test, &lab).await?;
    }
    let j = wait_job(&s.client, &job_id, &["Finished", "InError"], BOOT_WAIT).await?;
    ensure!(j["Status"] == "Finished", "the cutover did not finish: {j}");
    let final_image = j["ImageId"].as_str().context("ImageId")?.to_owned();
    ensure!(
        final_image != run1_image && Some(&final_image) != image1.as_ref(),
        "the cutover made no new image: {j}"
    );
    let img2 = validated(&s, &final_image).await?;
    eprintln!(
        "{name}: cutover request to a validated final image in {:?}",
        t1.elapsed()
    );
    assert_migrated_boot(&lab, &img2)?;
    ensure!(
        command_output(&img2, "changed file")? == change.trim(),
        "the final image does not have the change: {}",
        summarize(&img2["ValidationReport"])
    );
    let hook_ran = std::fs::read_to_string(&hook_log).unwrap_or_default();
    ensure!(
        hook_ran.lines().count() == 1,
        "the pre-cutover hook ran {} times",
        hook_ran.lines().count()
    );
    if let Some(prod) = &instance_id {
        // The production instance now runs the final image, validated in place (with the change).
        let inst = instance(&s, prod).await?;
        ensure!(
            inst["ImageId"] == final_image.as_str() && inst["Status"] == "Running",
            "the production instance does not run the final image: {inst}"
        );
        let checks = inst["ValidationChecks"]
            .as_array()
            .with_context(|| format!("no ValidationChecks: {inst}"))?;
        ensure!(
            !checks.is_empty() && checks.iter().all(|c| c["Passed"] == true),
            "the production instance's checks: {inst}"
        );
        ensure!(
            img2["ValidationReport"]["InstanceId"] == prod.as_str(),
            "the final image was not validated on the production instance: {}",
            img2["ValidationReport"]
        );
    }
    if let Some(test) = &test_instance {
        // Finalize: the test instance is gone once the job finished.
        wait_for(
            Duration::from_secs(120),
            "the test instance's removal",
            || async { Ok(instance(&s, test).await?.is_null().then_some(())) },
        )
        .await?;
    }
    eprintln!("{name}: passed in {:?}", started.elapsed());
    Ok(())
}

/// Where the cutover lands: a final image (launched by the operator), or an existing production
/// instance the job names (`TargetType=TargetInstance`), re-disked, started and validated by Ferry.
#[derive(Clone, Copy)]
enum Target {
    Image,
    Instance,
}

async fn create_and_start(s: &OneSource, params: &[(&str, String)]) -> anyhow::Result<String> {
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let v = s.client.smc("CreateReplicationJob", &p(&params)).await?;
    let job_id = v["JobId"].as_str().context("JobId")?.to_owned();
    s.client
        .smc("StartReplicationJob", &p(&[("JobId", &job_id)]))
        .await?;
    Ok(job_id)
}

async fn run_instance(s: &OneSource, image_id: &str) -> anyhow::Result<String> {
    let v = s
        .client
        .ecs(
            "RunInstances",
            &p(&[
                ("RegionId", "local"),
                ("ImageId", image_id),
                ("InstanceType", "ecs.t1.small"),
            ]),
        )
        .await?;
    Ok(v["InstanceIdSets"]["InstanceIdSet"][0]
        .as_str()
        .with_context(|| format!("RunInstances answered {v}"))?
        .to_owned())
}

/// Waits until the instance's serial console shows the lab server's marker line.
async fn wait_for_marker(s: &OneSource, instance_id: &str, lab: &LabServer) -> anyhow::Result<()> {
    wait_for(BOOT_WAIT, "the instance to boot to its marker", || async {
        let out = s
            .client
            .ecs(
                "GetInstanceConsoleOutput",
                &p(&[("RegionId", "local"), ("InstanceId", instance_id)]),
            )
            .await?;
        let text = out["ConsoleOutput"].as_str().unwrap_or_default();
        let text = base64_decode(text).unwrap_or_else(|| text.to_owned());
        Ok(text.contains(&lab.facts.marker).then_some(()))
    })
    .await
}

/// GetInstanceConsoleOutput answers base64 like ECS.
fn base64_decode(s: &str) -> Option<String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_bios_mbr_ext4_onto_a_production_instance() -> anyhow::Result<()> {
    migrate(LabVariant::Bios, Target::Instance).await
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_uefi_gpt_esp() -> anyhow::Result<()> {
    migrate(LabVariant::Uefi, Target::Image).await
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_lvm_root() -> anyhow::Result<()> {
    migrate(LabVariant::Lvm, Target::Image).await
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_data_disk_by_device_name() -> anyhow::Result<()> {
    migrate(LabVariant::DataDisk, Target::Image).await
}

//! Whole-stack tests of the ECS subset (images, snapshots, instances) against a real `ferry server`, a real
//! `ferry-agent` replicating raw disk image files, and real QEMU instances (TCG) booting those images.
//! The disks hold no operating system, so an instance boots into SeaBIOS, which says so on the serial
//! console. The instance test is skipped, with the reason printed, only when `qemu-system-x86_64` is not
//! installed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use ferry::client::{Client, ClientError};
use ferry_test_utils::disk::random_bytes;
use ferry_test_utils::stack::{
    AgentProc, ServerProc, export, p, same_bytes, start_job, wait_job, wait_source,
};
use ferry_test_utils::wait_for;
use serde_json::Value;

const MIB: usize = 1 << 20;
const REGION: &str = "local";

/// A disk image with random data but no boot signature, so that firmware finds nothing to boot.
fn write_disk(path: &Path, seed: u64, data_mib: usize, size_mib: usize) -> anyhow::Result<()> {
    let mut data = random_bytes(seed, data_mib * MIB);
    data[510] = 0;
    data[511] = 0;
    data.resize(size_mib * MIB, 0);
    std::fs::write(path, data)?;
    Ok(())
}

/// A server (instances under TCG) with one agent for `disks`, after one finished replication; returns the
/// image it built.
struct Stack {
    server: ServerProc,
    client: Client,
    _agent: AgentProc,
    image: String,
}

impl Stack {
    async fn start(dir: &Path, disks: &[&Path]) -> anyhow::Result<Stack> {
        let mut server = ServerProc {
            data_dir: dir.join("server"),
            port: ferry_test_utils::free_port(),
            proc: None,
            extra_args: Vec::new(),
            // TCG: the same emulation on every machine, whatever its /dev/kvm.
            env: vec![("FERRY_VM_ACCEL".into(), "tcg".into())],
        };
        server.restart().await?;
        let client = server.client()?;
        let (_, code) = server.activation_code(1).await?;
        let agent = AgentProc::activate(&server, &dir.join("agent"), &code, disks).await?;
        wait_source(&client, &agent.source_id).await?;
        let job = start_job(&client, &agent.source_id, &[]).await?;
        wait_job(&client, &job, &["Finished"], Duration::from_secs(120)).await?;
        let images = ecs(&client, "DescribeImages", &[]).await?;
        let image = images["Images"]["Image"][0]["ImageId"]
            .as_str()
            .context("the job's image")?
            .to_owned();
        Ok(Stack {
            server,
            client,
            _agent: agent,
            image,
        })
    }
}

/// Kills every instance's QEMU of a data directory when a test ends (QEMU runs as a daemon: a failed
/// test would leave it behind).
struct KillInstances(PathBuf);

impl Drop for KillInstances {
    fn drop(&mut self) {
        let driver = ferry_vm::Driver::new(self.0.join("instances"));
        for id in driver.list().unwrap_or_default() {
            if let Some(r) = driver.find(&id) {
                let _ = std::process::Command::new("kill")
                    .args(["-9", &r.pid.to_string()])
                    .status();
            }
        }
    }
}

async fn ecs(client: &Client, action: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
    let mut all = p(&[("RegionId", REGION)]);
    all.extend(p(params));
    Ok(client.ecs(action, &all).await?)
}

/// The error an ECS call must fail with: (HTTP status, code).
async fn ecs_err(
    client: &Client,
    action: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let mut all = p(&[("RegionId", REGION)]);
    all.extend(p(params));
    match client.ecs(action, &all).await {
        Ok(v) => bail!("{action} {params:?} succeeded but should fail: {v}"),
        Err(ClientError::Api { status, code, .. }) => Ok((status, code)),
        Err(e) => bail!("{action}: {e}"),
    }
}

fn image_ids(v: &Value) -> Vec<String> {
    v["Images"]["Image"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ImageId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_image_available(client: &Client, id: &str) -> anyhow::Result<Value> {
    wait_for(
        Duration::from_secs(120),
        "the image to be built",
        || async {
            let v = ecs(
                client,
                "DescribeImages",
                &[("ImageId", id), ("Status", "ALL")],
            )
            .await?;
            let img = v["Images"]["Image"][0].clone();
            match img["Status"].as_str() {
                Some("Available") => Ok(Some(img)),
                Some("CreateFailed") => bail!("image {id} failed: {img}"),
                _ => Ok(None),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn images_and_snapshots() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (a, b) = (tmp.path().join("a.img"), tmp.path().join("b.img"));
    write_disk(&a, 11, 4, 16)?;
    write_disk(&b, 12, 2, 8)?;
    let Stack {
        server,
        client,
        image,
        ..
    } = Stack::start(tmp.path(), &[&a, &b]).await?;

    // DescribeImages: the job's image, its disks and the filters.
    let v = ecs(&client, "DescribeImages", &[("ImageId", &image)]).await?;
    assert_eq!(v["TotalCount"], 1, "{v}");
    let img = &v["Images"]["Image"][0];
    assert_eq!(img["ImageOwnerAlias"], "self");
    assert_eq!(img["Usage"], "none");
    assert_eq!(img["OSType"], "linux");
    let maps = img["DiskDeviceMappings"]["DiskDeviceMapping"]
        .as_array()
        .context("mappings")?
        .clone();
    assert_eq!(maps.len(), 2, "{img}");
    assert_eq!(maps[0]["Type"], "system");
    assert_eq!(maps[1]["Type"], "data");
    assert_eq!(maps[0]["Size"], "1", "Size is a string of GiB: {img}");
    let snap_a = maps[0]["SnapshotId"]
        .as_str()
        .context("snapshot a")?
        .to_owned();
    let snap_b = maps[1]["SnapshotId"]
        .as_str()
        .context("snapshot b")?
        .to_owned();
    let digest_a = maps[0]["RootDigest"].clone();
    let name = img["ImageName"].as_str().context("name")?.to_owned();
    let arch = img["Architecture"].as_str().context("arch")?.to_owned();
    for (filter, want) in [
        (vec![("ImageName", &name[1..name.len() - 1])], 1),
        (vec![("ImageName", "no-such-name")], 0),
        (vec![("Status", "Creating,CreateFailed")], 0),
        (vec![("Status", "ALL")], 1),
        (vec![("SnapshotId", snap_b.as_str())], 1),
        (vec![("SnapshotId", "sp-fenone")], 0),
        (vec![("OSType", "linux")], 1),
        (vec![("OSType", "windows")], 0),
        (vec![("Architecture", arch.as_str())], 1),
        (vec![("ImageOwnerAlias", "self")], 1),
        (vec![("ImageOwnerAlias", "system")], 0),
        (vec![("Usage", "instance")], 0),
        (vec![("Usage", "none")], 1),
        (vec![("IsPublic", "true")], 0),
        (vec![("Tag.1.Key", "env"), ("Tag.1.Value", "prod")], 0),
        (
            vec![
                ("Filter.1.Key", "CreationStartTime"),
                ("Filter.1.Value", "2000-01-01T00:00Z"),
            ],
            1,
        ),
        (
            vec![
                ("Filter.1.Key", "CreationEndTime"),
                ("Filter.1.Value", "2000-01-01T00:00Z"),
            ],
            0,
        ),
    ] {
        let v = ecs(&client, "DescribeImages", &filter).await?;
        assert_eq!(v["TotalCount"], want, "DescribeImages {filter:?}: {v}");
    }
    assert_eq!(
        ecs_err(&client, "DescribeImages", &[("PageSize", "101")]).await?,
        (400, "InvalidParameter".into())
    );

    // DescribeSnapshots: both disks' snapshots, both paging styles, the filters.
    let v = ecs(&client, "DescribeSnapshots", &[]).await?;
    assert_eq!(v["TotalCount"], 2, "{v}");
    let s0 = &v["Snapshots"]["Snapshot"][0];
    assert_eq!(s0["SnapshotId"], snap_a.as_str());
    assert_eq!(s0["SourceDiskType"], "system");
    assert_eq!(s0["SourceDiskSize"], "1", "a string of GiB: {s0}");
    assert_eq!(s0["Status"], "accomplished");
    assert_eq!(s0["Usage"], "image");
    let first = ecs(&client, "DescribeSnapshots", &[("MaxResults", "1")]).await?;
    assert_eq!(
        first["Snapshots"]["Snapshot"][0]["SnapshotId"],
        snap_a.as_str()
    );
    let token = first["NextToken"].as_str().context("NextToken")?.to_owned();
    ensure!(!token.is_empty(), "a second page exists: {first}");
    let second = ecs(
        &client,
        "DescribeSnapshots",
        &[("MaxResults", "1"), ("NextToken", &token)],
    )
    .await?;
    assert_eq!(
        second["Snapshots"]["Snapshot"][0]["SnapshotId"],
        snap_b.as_str()
    );
    assert_eq!(second["NextToken"], "", "last page: {second}");
    let page2 = ecs(
        &client,
        "DescribeSnapshots",
        &[("PageSize", "1"), ("PageNumber", "2")],
    )
    .await?;
    assert_eq!(page2["PageNumber"], 2);
    assert_eq!(
        page2["Snapshots"]["Snapshot"][0]["SnapshotId"],
        snap_b.as_str()
    );
    let ids = format!(r#"["{snap_b}"]"#);
    for (filter, want) in [
        (vec![("SnapshotIds", ids.as_str())], 1),
        (vec![("SourceDiskType", "data")], 1),
        (vec![("Usage", "image")], 2),
        (vec![("Usage", "none")], 0),
        (vec![("Status", "progressing")], 0),
        (vec![("Status", "accomplished")], 2),
        (vec![("InstanceId", "i-fenone")], 0),
    ] {
        let v = ecs(&client, "DescribeSnapshots", &filter).await?;
        assert_eq!(v["TotalCount"], want, "DescribeSnapshots {filter:?}: {v}");
    }
    let named = ecs(
        &client,
        "DescribeSnapshots",
        &[("SnapshotName", s0["SnapshotName"].as_str().context("name")?)],
    )
    .await?;
    assert_eq!(named["TotalCount"], 1, "{named}");
    assert_eq!(
        ecs_err(
            &client,
            "DescribeSnapshots",
            &[("SnapshotIds", "sp-1,sp-2")]
        )
        .await?,
        (400, "InvalidParameter".into())
    );
    assert_eq!(
        ecs_err(&client, "DescribeSnapshots", &[("NextToken", "garbage")]).await?,
        (400, "InvalidParameter".into())
    );

    // CreateImage from the system disk's snapshot: idempotent with a ClientToken, verified against the
    // same root digest, byte-identical to the source disk.
    let create = [
        ("DiskDeviceMapping.1.SnapshotId", snap_a.as_str()),
        ("ImageName", "copy-of-a"),
        ("ClientToken", "create-copy-1"),
    ];
    let copy = ecs(&client, "CreateImage", &create).await?["ImageId"]
        .as_str()
        .context("ImageId")?
        .to_owned();
    let again = ecs(&client, "CreateImage", &create).await?;
    assert_eq!(
        again["ImageId"],
        copy.as_str(),
        "same ClientToken, same image"
    );
    assert_eq!(
        ecs_err(
            &client,
            "CreateImage",
            &[("SnapshotId", &snap_a), ("ImageName", "copy-of-a")]
        )
        .await?,
        (400, "InvalidImageName.Duplicated".into())
    );
    assert_eq!(
        ecs_err(
            &client,
            "CreateImage",
            &[("SnapshotId", "sp-fenosuchsnapshot")]
        )
        .await?,
        (404, "InvalidSnapshotId.NotFound".into())
    );
    assert_eq!(
        ecs_err(&client, "CreateImage", &[("ImageName", "nothing")]).await?,
        (400, "MissingParameter".into())
    );
    let built = wait_image_available(&client, &copy).await?;
    let m = &built["DiskDeviceMappings"]["DiskDeviceMapping"];
    assert_eq!(m.as_array().map(Vec::len), Some(1), "{built}");
    assert_eq!(m[0]["SnapshotId"], snap_a.as_str());
    assert_eq!(m[0]["RootDigest"], digest_a, "{built}");
    let files = export(&client, &copy, "raw").await?;
    ensure!(
        same_bytes(&files[0], &a)?,
        "the new image's disk differs from the source disk"
    );

    // DeleteSnapshot: refused while an image uses it, unless Force; its index object goes.
    assert_eq!(
        ecs_err(&client, "DeleteSnapshot", &[("SnapshotId", &snap_b)]).await?,
        (403, "SnapshotCreatedImage".into())
    );
    assert_eq!(
        ecs_err(
            &client,
            "DeleteSnapshot",
            &[("SnapshotId", "sp-fenosuchsnapshot")]
        )
        .await?,
        (404, "InvalidSnapshotId.NotFound".into())
    );
    let indexes = server.data_dir.join("objects").join("indexes");
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
    let before = count(&indexes);
    ecs(
        &client,
        "DeleteSnapshot",
        &[("SnapshotId", &snap_b), ("Force", "true")],
    )
    .await?;
    assert_eq!(
        count(&indexes),
        before - 1,
        "the snapshot's index object is removed"
    );
    let v = ecs(&client, "DescribeSnapshots", &[]).await?;
    assert_eq!(v["TotalCount"], 1, "{v}");
    assert_eq!(
        ecs_err(&client, "CreateImage", &[("SnapshotId", &snap_b)]).await?,
        (404, "InvalidSnapshotId.NotFound".into())
    );
    // The image built from it keeps working.
    let v = ecs(&client, "DescribeImages", &[("ImageId", &image)]).await?;
    assert_eq!(v["Images"]["Image"][0]["Status"], "Available");

    // DeleteImage: its records and files go, its snapshots stay.
    assert_eq!(
        ecs_err(&client, "DeleteImage", &[("ImageId", "m-fenosuchimage")]).await?,
        (404, "InvalidImageId.NotFound".into())
    );
    ecs(&client, "DeleteImage", &[("ImageId", &copy)]).await?;
    let v = ecs(&client, "DescribeImages", &[("Status", "ALL")]).await?;
    assert_eq!(image_ids(&v), vec![image.clone()], "{v}");
    assert!(!server.data_dir.join("images").join(&copy).exists());
    let v = ecs(
        &client,
        "DescribeSnapshots",
        &[("SnapshotIds", &format!(r#"["{snap_a}"]"#))],
    )
    .await?;
    assert_eq!(v["TotalCount"], 1, "the snapshot stays: {v}");
    Ok(())
}

async fn instance(client: &Client, id: &str) -> anyhow::Result<Value> {
    let ids = format!(r#"["{id}"]"#);
    let v = ecs(client, "DescribeInstances", &[("InstanceIds", &ids)]).await?;
    v["Instances"]["Instance"]
        .get(0)
        .cloned()
        .with_context(|| format!("instance {id} not listed: {v}"))
}

async fn wait_status(client: &Client, id: &str, status: &str) -> anyhow::Result<Value> {
    wait_for(
        Duration::from_secs(60),
        &format!("instance {id} to be {status}"),
        || async {
            let i = instance(client, id).await?;
            Ok((i["Status"] == status).then_some(i))
        },
    )
    .await
}

async fn wait_console(client: &Client, id: &str, text: &str) -> anyhow::Result<String> {
    wait_for(
        Duration::from_secs(90),
        &format!("{text:?} on the console of {id}"),
        || async {
            let v = ecs(
                client,
                "GetInstanceConsoleOutput",
                &[("InstanceId", id), ("RemoveSymbols", "true")],
            )
            .await?;
            let out = base64::engine::general_purpose::STANDARD
                .decode(v["ConsoleOutput"].as_str().context("ConsoleOutput")?)?;
            let out = String::from_utf8_lossy(&out).into_owned();
            Ok(out.contains(text).then_some(out))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_run_stop_start_and_delete() -> anyhow::Result<()> {
    if ferry_vm::qemu_missing("instance test") {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("sys.img");
    write_disk(&disk, 21, 2, 8)?;
    let Stack {
        mut server,
        client,
        image,
        ..
    } = Stack::start(tmp.path(), &[&disk]).await?;
    let _kill = KillInstances(server.data_dir.clone());

    // Bad input.
    let nano = ("InstanceType", "ecs.t1.nano");
    for (params, want) in [
        (vec![nano], (400, "MissingParameter")),
        (
            vec![("ImageId", image.as_str()), ("InstanceType", "ecs.x9.huge")],
            (400, "InvalidInstanceType.ValueNotSupported"),
        ),
        (
            vec![("ImageId", "m-fenosuchimage"), nano],
            (404, "InvalidImageId.NotFound"),
        ),
        (
            vec![("ImageId", image.as_str()), nano, ("Amount", "101")],
            (400, "InvalidParameter"),
        ),
        (
            vec![("ImageId", image.as_str()), nano, ("DryRun", "true")],
            (400, "DryRunOperation"),
        ),
        (
            vec![
                ("ImageId", image.as_str()),
                nano,
                ("SecurityGroupId", "sg-1"),
            ],
            (404, "InvalidSecurityGroupId.NotFound"),
        ),
    ] {
        let (status, code) = ecs_err(&client, "RunInstances", &params).await?;
        assert_eq!((status, code.as_str()), want, "RunInstances {params:?}");
    }
    let none = ecs(&client, "DescribeInstances", &[]).await?;
    assert_eq!(
        none["TotalCount"], 0,
        "nothing was created by bad requests: {none}"
    );

    // RunInstances: two instances that start by themselves; the ClientToken makes it idempotent.
    let run = [
        ("ImageId", image.as_str()),
        nano,
        ("Amount", "2"),
        ("InstanceName", "web"),
        ("UniqueSuffix", "true"),
        ("ClientToken", "run-1"),
    ];
    let v = ecs(&client, "RunInstances", &run).await?;
    let ids: Vec<String> = v["InstanceIdSets"]["InstanceIdSet"]
        .as_array()
        .context("InstanceIdSet")?
        .iter()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{v}");
    let again = ecs(&client, "RunInstances", &run).await?;
    assert_eq!(again["InstanceIdSets"], v["InstanceIdSets"]);
    let (one, two) = (ids[0].as_str(), ids[1].as_str());

    let i1 = wait_status(&client, one, "Running").await?;
    wait_status(&client, two, "Running").await?;
    assert_eq!(i1["InstanceName"], "web001");
    assert_eq!(i1["Cpu"], 1);
    assert_eq!(i1["Memory"], 128);
    assert_eq!(i1["InstanceType"], "ecs.t1.nano");
    assert_eq!(i1["ImageId"], image.as_str());
    assert!(
        i1["StartTime"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{i1}"
    );
    assert!(
        i1["VpcAttributes"]["PrivateIpAddress"]["IpAddress"].is_array(),
        "{i1}"
    );
    let console = wait_console(&client, one, "No bootable device").await?;
    assert!(console.contains("Booting from Hard Disk"), "{console}");

    // Instances outlive the control plane: a restarted server finds them running (pidfile + /proc).
    let instances_dir = server.data_dir.join("instances");
    let pid_of = |id: &str| {
        std::fs::read_to_string(instances_dir.join(id).join("qemu.pid")).unwrap_or_default()
    };
    let pid_before = pid_of(one);
    server.stop().await?;
    server.restart().await?;
    let client = server.client()?;
    let after = instance(&client, one).await?;
    assert_eq!(after["Status"], "Running", "{after}");
    assert_eq!(
        after["StartTime"], i1["StartTime"],
        "not restarted: {after}"
    );
    assert_eq!(pid_of(one), pid_before, "the same QEMU");

    // DescribeInstances filters and token paging.
    for (filter, want) in [
        (vec![("InstanceName", "web*")], 2),
        (vec![("InstanceName", "*002")], 1),
        (vec![("InstanceName", "db*")], 0),
        (vec![("Status", "Running")], 2),
        (vec![("Status", "Stopped")], 0),
        (vec![("ImageId", image.as_str())], 2),
        (vec![("VpcId", "vpc-1")], 0),
    ] {
        let v = ecs(&client, "DescribeInstances", &filter).await?;
        assert_eq!(v["TotalCount"], want, "DescribeInstances {filter:?}: {v}");
    }
    // Two pages of one: each instance once (both were created in the same second, so their order is
    // the ID's).
    let page = ecs(&client, "DescribeInstances", &[("MaxResults", "1")]).await?;
    let token = page["NextToken"].as_str().context("NextToken")?.to_owned();
    ensure!(!token.is_empty(), "a second page exists: {page}");
    let last = ecs(
        &client,
        "DescribeInstances",
        &[("MaxResults", "1"), ("NextToken", &token)],
    )
    .await?;
    assert_eq!(last["NextToken"], "", "last page: {last}");
    let mut seen: Vec<&str> = [&page, &last]
        .iter()
        .filter_map(|v| v["Instances"]["Instance"][0]["InstanceId"].as_str())
        .collect();
    seen.sort_unstable();
    let mut want = vec![one, two];
    want.sort_unstable();
    assert_eq!(seen, want);

    // The image is in use.
    let v = ecs(&client, "DescribeImages", &[("ImageId", &image)]).await?;
    assert_eq!(v["Images"]["Image"][0]["Usage"], "instance");
    assert_eq!(
        ecs_err(&client, "DeleteImage", &[("ImageId", &image)]).await?,
        (403, "ImageUsingByInstance".into())
    );

    // Status rules.
    assert_eq!(
        ecs_err(&client, "StartInstance", &[("InstanceId", one)]).await?,
        (403, "IncorrectInstanceStatus".into())
    );
    assert_eq!(
        ecs_err(&client, "DeleteInstance", &[("InstanceId", two)]).await?,
        (403, "IncorrectInstanceStatus".into())
    );
    assert_eq!(
        ecs_err(
            &client,
            "StopInstance",
            &[("InstanceId", "i-fenosuchinstance")]
        )
        .await?,
        (404, "InvalidInstanceId.NotFound".into())
    );

    // Stop, start, force-delete.
    ecs(
        &client,
        "StopInstance",
        &[("InstanceId", one), ("ForceStop", "true")],
    )
    .await?;
    wait_status(&client, one, "Stopped").await?;
    assert_eq!(
        ecs_err(&client, "StopInstance", &[("InstanceId", one)]).await?,
        (403, "IncorrectInstanceStatus".into())
    );
    ecs(
        &client,
        "DeleteInstance",
        &[("InstanceId", two), ("Force", "true")],
    )
    .await?;
    assert_eq!(
        ecs_err(&client, "GetInstanceConsoleOutput", &[("InstanceId", two)]).await?,
        (404, "InvalidInstanceId.NotFound".into())
    );
    assert!(!server.data_dir.join("instances").join(two).exists());
    ecs(&client, "StartInstance", &[("InstanceId", one)]).await?;
    wait_status(&client, one, "Running").await?;
    wait_console(&client, one, "No bootable device").await?;

    // CreateInstance stays Stopped.
    let created = ecs(&client, "CreateInstance", &[("ImageId", &image), nano]).await?;
    let three = created["InstanceId"]
        .as_str()
        .context("InstanceId")?
        .to_owned();
    let i3 = wait_status(&client, &three, "Stopped").await?;
    assert_eq!(i3["StartTime"], "", "never started: {i3}");

    // Force-deleting the image makes the instances' disks independent: they boot without it.
    ecs(
        &client,
        "DeleteImage",
        &[("ImageId", &image), ("Force", "true")],
    )
    .await?;
    assert!(!server.data_dir.join("images").join(&image).exists());
    ecs(
        &client,
        "StopInstance",
        &[("InstanceId", one), ("ForceStop", "true")],
    )
    .await?;
    wait_status(&client, one, "Stopped").await?;
    for id in [one, three.as_str()] {
        ecs(&client, "StartInstance", &[("InstanceId", id)]).await?;
        wait_status(&client, id, "Running").await?;
        wait_console(&client, id, "No bootable device").await?;
    }

    for id in [one, three.as_str()] {
        ecs(
            &client,
            "DeleteInstance",
            &[("InstanceId", id), ("Force", "true")],
        )
        .await?;
    }
    let v = ecs(&client, "DescribeInstances", &[]).await?;
    assert_eq!(v["TotalCount"], 0, "{v}");
    let left = std::fs::read_dir(server.data_dir.join("instances"))?.count();
    assert_eq!(left, 0, "every instance directory is removed");
    Ok(())
}

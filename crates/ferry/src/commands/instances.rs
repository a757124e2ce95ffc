//! `ferry instance …`: VMs launched from images (ECS `RunInstances`, `CreateInstance`,
//! `DescribeInstances`, `StartInstance`, `StopInstance`, `DeleteInstance`) and their serial console
//! (`GetInstanceConsoleOutput`, whose `ConsoleOutput` is base64 and is printed decoded).

use base64::Engine as _;
use serde_json::Value;

use super::Session;
use crate::cli::{InstanceCommand, InstanceCreateArgs};
use crate::client::ECS_VERSION;
use crate::output::{Table, human_bytes, key_values};
use crate::view::{list, number, text, time};

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: InstanceCommand) -> anyhow::Result<()> {
    match cmd {
        InstanceCommand::Run(args) => {
            let mut params = create_params(s, &args.create);
            params.push(("Amount".to_owned(), args.count.to_string()));
            let resp = s.client.ecs("RunInstances", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let ids: Vec<String> = list(&resp, "InstanceIdSets", "InstanceIdSet")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let mut out = format!(
                "Launched {} instance(s) from image {}; they are starting:\n",
                ids.len(),
                args.create.image
            );
            for id in &ids {
                out.push_str(&format!("  {id}\n"));
            }
            if let Some(first) = ids.first() {
                out.push_str(&format!(
                    "Follow one with `ferry instance show {first}` and `ferry instance console {first}`.\n"
                ));
            }
            s.print(&out)
        }
        InstanceCommand::Create(args) => {
            let params = create_params(s, &args);
            let resp = s.client.ecs("CreateInstance", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let id = text(&resp, "InstanceId");
            s.print(&format!(
                "Created instance {id} from image {} (stopped). Start it with `ferry instance start {id}`.\n",
                args.image
            ))
        }
        InstanceCommand::List => {
            let Some(items) = s
                .list_items(
                    ECS_VERSION,
                    "DescribeInstances",
                    &[s.region()],
                    ("Instances", "Instance"),
                    100,
                    "No instances. Launch one from an image with `ferry instance run --image <image ID>`.\n",
                )
                .await?
            else {
                return Ok(());
            };
            s.print(&instances_table(&items).render())
        }
        InstanceCommand::Show { id } => {
            let params = [
                s.region(),
                (
                    "InstanceIds".to_owned(),
                    serde_json::to_string(&[&id]).unwrap_or_default(),
                ),
            ];
            let resp = s.client.ecs("DescribeInstances", &params).await?;
            let Some(instance) = list(&resp, "Instances", "Instance")
                .iter()
                .find(|i| text(i, "InstanceId") == id)
            else {
                anyhow::bail!(
                    "instance {id} does not exist: list instances with `ferry instance list`"
                );
            };
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&render_instance(instance))
        }
        InstanceCommand::Start { id } => {
            let resp = instance_call(s, "StartInstance", &id, None).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Starting instance {id}. Its boot shows in `ferry instance console {id}`.\n"
            ))
        }
        InstanceCommand::Stop { id, force } => {
            let resp = instance_call(s, "StopInstance", &id, Some(("ForceStop", force))).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let how = if force {
                "powering it off"
            } else {
                "asking the guest to shut down"
            };
            s.print(&format!("Stopping instance {id} ({how}).\n"))
        }
        InstanceCommand::Delete { id, force } => {
            let resp = instance_call(s, "DeleteInstance", &id, Some(("Force", force))).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Deleted instance {id} and its disk overlay (the image stays).\n"
            ))
        }
        InstanceCommand::Console { id } => {
            let resp = instance_call(s, "GetInstanceConsoleOutput", &id, None).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let console = decode_console(&text(&resp, "ConsoleOutput")).map_err(|e| {
                anyhow::anyhow!(
                    "the console output of instance {id} is not base64 ({e}): see the raw answer with \
                     `ferry instance console {id} --output json`"
                )
            })?;
            if console.is_empty() {
                return s.print(&format!(
                    "Instance {id} has written nothing to its console yet.\n"
                ));
            }
            let mut console = console;
            if !console.ends_with('\n') {
                console.push('\n');
            }
            s.print(&console)
        }
    }
}

/// `RegionId`, `ImageId` and the optional type and name, shared by `RunInstances` and `CreateInstance`.
fn create_params(s: &Session<'_, '_>, args: &InstanceCreateArgs) -> Vec<(String, String)> {
    let mut params = vec![s.region(), ("ImageId".to_owned(), args.image.clone())];
    if let Some(t) = &args.instance_type {
        params.push(("InstanceType".to_owned(), t.clone()));
    }
    if let Some(n) = &args.name {
        params.push(("InstanceName".to_owned(), n.clone()));
    }
    params
}

/// An action on one instance (`InstanceId`), with an optional boolean flag.
async fn instance_call(
    s: &Session<'_, '_>,
    action: &str,
    id: &str,
    flag: Option<(&str, bool)>,
) -> anyhow::Result<Value> {
    let mut params = vec![s.region(), ("InstanceId".to_owned(), id.to_owned())];
    if let Some((k, v)) = flag {
        params.push((k.to_owned(), v.to_string()));
    }
    Ok(s.client.ecs(action, &params).await?)
}

/// The console text from `ConsoleOutput` (base64); bytes that are not UTF-8 show as U+FFFD, since a
/// console may carry anything a booting guest writes.
pub fn decode_console(b64: &str) -> Result<String, base64::DecodeError> {
    let cleaned: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(cleaned)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn memory(v: &Value) -> String {
    number(v, "Memory")
        .map(|mib| human_bytes(mib.saturating_mul(1 << 20)))
        .unwrap_or_default()
}

/// The addresses of a wrapped `…IpAddress` list, comma-separated.
fn addresses(v: Option<&Value>, outer: &str) -> String {
    v.map(|v| {
        list(v, outer, "IpAddress")
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_default()
}

fn instances_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID", "NAME", "STATUS", "TYPE", "CPUS", "MEMORY", "IMAGE", "CREATED",
    ]);
    for i in items {
        t.row(vec![
            text(i, "InstanceId"),
            text(i, "InstanceName"),
            text(i, "Status"),
            text(i, "InstanceType"),
            text(i, "Cpu"),
            memory(i),
            text(i, "ImageId"),
            time(i, "CreationTime"),
        ]);
    }
    t
}

/// The readable description of one instance.
pub fn render_instance(i: &Value) -> String {
    let mut out = format!(
        "Instance {} ({})\n",
        text(i, "InstanceId"),
        text(i, "InstanceName")
    );
    out.push_str(&key_values(
        &[
            ("Status", text(i, "Status")),
            ("Type", text(i, "InstanceType")),
            ("CPUs", text(i, "Cpu")),
            ("Memory", memory(i)),
            ("Image", text(i, "ImageId")),
            ("OS", text(i, "OSName")),
            ("Host name", text(i, "HostName")),
            (
                "Private IP",
                addresses(i.get("VpcAttributes"), "PrivateIpAddress"),
            ),
            ("Public IP", addresses(Some(i), "PublicIpAddress")),
            ("Created", time(i, "CreationTime")),
            ("Started", time(i, "StartTime")),
            ("Description", text(i, "Description")),
        ],
        2,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance() -> Value {
        json!({
            "InstanceId": "i-1", "InstanceName": "web-test", "Status": "Running",
            "InstanceType": "ecs.t1.small", "Cpu": 1, "Memory": 1024, "ImageId": "m-1",
            "OSName": "Debian 12", "CreationTime": "2024-05-01T10:00:00Z",
            "VpcAttributes": {"PrivateIpAddress": {"IpAddress": ["10.0.2.15"]}},
            "PublicIpAddress": {"IpAddress": []}
        })
    }

    #[test]
    fn consoles_decode_from_base64_even_when_not_utf8() {
        assert_eq!(
            decode_console("Qm9vdGluZyBmcm9tIEhhcmQgRGlzay4uLgo=").expect("base64"),
            "Booting from Hard Disk...\n"
        );
        assert_eq!(decode_console("").expect("empty"), "");
        assert_eq!(decode_console("/w==").expect("base64"), "\u{fffd}");
        assert_eq!(decode_console("aGk\n=").expect("wrapped"), "hi");
        assert!(decode_console("not base64!").is_err());
    }

    #[test]
    fn instances_render_with_memory_in_binary_units() {
        let row = instances_table(&[instance()]).render();
        let row = row.lines().nth(1).expect("a row");
        assert_eq!(
            row,
            "i-1  web-test  Running  ecs.t1.small  1     1.0 GiB  m-1    2024-05-01 10:00:00"
        );
        let out = render_instance(&instance());
        assert!(out.contains("Private IP: 10.0.2.15"), "{out}");
        assert!(!out.contains("Public IP"), "{out}");
    }
}

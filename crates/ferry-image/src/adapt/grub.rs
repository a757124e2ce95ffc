//! Serial console and root device for GRUB: `/etc/default/grub` (for the guest's own future
//! `update-grub`) and the existing generated configuration edited in place (`grub.cfg`, BLS entries),
//! because grub-mkconfig cannot probe loop or LVM devices on this host.
//!
//! Invariant: edits are textual and idempotent: a line that already has `console=ttyS0` or a terminal
//! that already includes `serial` is left alone.

use super::volumes::Volume;

pub(crate) const CONSOLE_ARGS: &str = "console=tty0 console=ttyS0,115200n8";
pub(crate) const SERIAL_COMMAND: &str =
    "serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1";

fn set_var(text: &str, key: &str, value: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if !done && t.starts_with(&format!("{key}=")) {
            out.push_str(&format!("{key}=\"{value}\"\n"));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{key}=\"{value}\"\n"));
    }
    out
}

fn get_var(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        l.trim_start()
            .strip_prefix(&format!("{key}="))
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// A kernel command line without `quiet`: with it the kernel prints nothing below warnings on the
/// console, not even the `Linux version` banner boot validation looks for.
fn drop_quiet(args: &str) -> String {
    args.split(' ')
        .filter(|a| *a != "quiet")
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/etc/default/grub` with the serial console (and without `quiet`).
pub(crate) fn default_grub(text: &str) -> String {
    let mut t = text.to_string();
    if let Some(d) = get_var(&t, "GRUB_CMDLINE_LINUX_DEFAULT")
        && d.split_whitespace().any(|a| a == "quiet")
    {
        let new = d
            .split_whitespace()
            .filter(|a| *a != "quiet")
            .collect::<Vec<_>>()
            .join(" ");
        t = set_var(&t, "GRUB_CMDLINE_LINUX_DEFAULT", &new);
    }
    let cmdline = get_var(&t, "GRUB_CMDLINE_LINUX").unwrap_or_default();
    if !cmdline.contains("console=ttyS0") {
        let new = if cmdline.is_empty() {
            CONSOLE_ARGS.to_string()
        } else {
            format!("{cmdline} {CONSOLE_ARGS}")
        };
        t = set_var(&t, "GRUB_CMDLINE_LINUX", &new);
    }
    if !get_var(&t, "GRUB_TERMINAL").is_some_and(|v| v.contains("serial")) {
        t = set_var(&t, "GRUB_TERMINAL", "console serial");
    }
    if get_var(&t, "GRUB_SERIAL_COMMAND").is_none() {
        t = set_var(&t, "GRUB_SERIAL_COMMAND", SERIAL_COMMAND);
    }
    t
}

/// Rewrites `root=/dev/sdXN` to `root=UUID=…` in one kernel command line; returns it.
fn fix_root(args: &str, vols: &[Volume], source_devices: &[String]) -> String {
    args.split(' ')
        .map(|a| match a.strip_prefix("root=") {
            Some(dev) => match super::fstab::volume_for_device(vols, dev, source_devices)
                .and_then(|v| v.uuid.as_ref())
            {
                Some(u) => format!("root=UUID={u}"),
                None => a.to_string(),
            },
            None => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A generated `grub.cfg` with the console on every kernel line, the serial terminal, and `root=` by
/// UUID. A configuration with no kernel line (an EFI stub that loads another) is returned unchanged.
pub(crate) fn grub_cfg(text: &str, vols: &[Volume], source_devices: &[String]) -> String {
    let is_kernel = |t: &str| {
        matches!(
            t.split_whitespace().next(),
            Some("linux" | "linux16" | "linuxefi")
        )
    };
    if !text.lines().any(|l| is_kernel(l.trim_start())) {
        return text.to_string();
    }
    let has_serial = text.lines().any(|l| l.trim_start().starts_with("serial "));
    let mut out = String::with_capacity(text.len() + 256);
    let mut inserted = has_serial;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let indent = &line[..line.len() - t.len()];
        let body = t.trim_end_matches('\n');
        if !inserted && !t.starts_with('#') {
            out.push_str(&format!(
                "# Ferry: serial console\n{SERIAL_COMMAND}\nterminal_input console serial\nterminal_output console serial\n"
            ));
            inserted = true;
        }
        if is_kernel(t) {
            let mut l = drop_quiet(&fix_root(body, vols, source_devices));
            if !l.contains("console=ttyS0") {
                l.push(' ');
                l.push_str(CONSOLE_ARGS);
            }
            out.push_str(indent);
            out.push_str(&l);
            out.push('\n');
        } else if (t.starts_with("terminal_output ") || t.starts_with("terminal_input "))
            && !t.contains("serial")
        {
            let cmd = t.split_whitespace().next().unwrap_or("terminal_output");
            out.push_str(&format!("{indent}{cmd} console serial\n"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A BLS entry (`/boot/loader/entries/*.conf`) with the console on its `options` line.
pub(crate) fn bls_entry(text: &str, vols: &[Volume], source_devices: &[String]) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        match line.trim_end_matches('\n').strip_prefix("options ") {
            Some(opts) => {
                let mut o = drop_quiet(&fix_root(opts, vols, source_devices));
                if !o.contains("console=ttyS0") {
                    o.push(' ');
                    o.push_str(CONSOLE_ARGS);
                }
                out.push_str(&format!("options {o}\n"));
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    #[test]
    fn default_grub_is_idempotent() {
        let t = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"net.ifnames=1\"\n";
        let a = default_grub(t);
        assert!(
            a.contains("GRUB_CMDLINE_LINUX=\"net.ifnames=1 console=tty0 console=ttyS0,115200n8\"")
        );
        assert!(a.contains("GRUB_TERMINAL=\"console serial\""));
        assert!(a.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"\"\n"));
        assert!(a.contains("GRUB_SERIAL_COMMAND="));
        assert_eq!(default_grub(&a), a);
    }

    #[test]
    fn grub_cfg_gets_console_and_terminal() {
        let t = "#\n# DO NOT EDIT\n#\nset default=0\nterminal_output gfxterm\nmenuentry 'Debian' {\n\tlinux /boot/vmlinuz root=/dev/sda1 ro quiet\n\tinitrd /boot/initrd.img\n}\n";
        let a = grub_cfg(t, &[], &[]);
        assert!(a.contains(
            "\tlinux /boot/vmlinuz root=/dev/sda1 ro console=tty0 console=ttyS0,115200n8\n"
        ));
        assert!(a.contains("terminal_output console serial\n"));
        assert!(!a.contains("gfxterm"));
        assert!(a.contains(SERIAL_COMMAND));
        assert_eq!(grub_cfg(&a, &[], &[]), a);
        let stub = "search.fs_uuid X root\nconfigfile ($root)/boot/grub/grub.cfg\n";
        assert_eq!(grub_cfg(stub, &[], &[]), stub);
        let b = bls_entry("title x\noptions root=UUID=1 ro\n", &[], &[]);
        assert_eq!(
            b,
            format!("title x\noptions root=UUID=1 ro {CONSOLE_ARGS}\n")
        );
    }
}

//! LVM2 without device-mapper: read a physical volume's label and text metadata, and find where each
//! logical volume's bytes are, so a linear LV can be exposed as an offset loop device.
//!
//! On-disk layout (LVM2 `lib/format_text/layout.h`, all little-endian): a 512-byte label in one of the
//! first four sectors (`LABELONE`, …, `offset_xl` to the PV header, type `LVM2 001`); the PV header
//! (32-byte UUID, device size, then zero-terminated lists of data areas and metadata areas, each
//! `{offset u64, size u64}` in bytes); at each metadata area a 512-byte header (magic
//! ` LVM2 x[5A%r0N*>`, version 1, start, size, then `{offset, size, checksum, flags}` locations) whose
//! first location points at the current metadata text, in a circular buffer after the header.
//!
//! Invariant: this module only reads. Anything but a single-segment, single-stripe (`striped` with
//! `stripe_count = 1`) LV on one PV is reported as unsupported rather than guessed.

use std::collections::BTreeMap;

/// A value in LVM's text metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `"text"`.
    Str(String),
    /// `123`.
    Int(i64),
    /// `[ … ]`.
    List(Vec<Value>),
    /// `name { … }`.
    Section(Section),
}

/// A `{ … }` section: keys in order of appearance.
pub type Section = BTreeMap<String, Value>;

/// Parses LVM2 text metadata (`key = value`, `name { … }`, `[ … ]` lists, `#` comments).
pub fn parse_metadata(text: &str) -> Result<Section, String> {
    let toks = tokenize(text)?;
    let mut pos = 0;
    let sec = parse_section(&toks, &mut pos, false)?;
    Ok(sec)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Sym(char),
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = text.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '#' => {
                for c in it.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '{' | '}' | '[' | ']' | '=' | ',' => {
                out.push(Tok::Sym(c));
                it.next();
            }
            '"' => {
                it.next();
                let mut s = String::new();
                loop {
                    match it.next() {
                        None => return Err("unterminated string".into()),
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(e) => s.push(e),
                            None => return Err("unterminated string".into()),
                        },
                        Some(ch) => s.push(ch),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut s = String::new();
                while let Some(&d) = it.peek() {
                    if d.is_ascii_alphanumeric() || d == '-' || d == '.' || d == '_' {
                        s.push(d);
                        it.next();
                    } else {
                        break;
                    }
                }
                match s.parse::<i64>() {
                    Ok(n) => out.push(Tok::Int(n)),
                    Err(_) => out.push(Tok::Ident(s)),
                }
            }
            c if c.is_ascii_alphanumeric() || "_.+-".contains(c) => {
                let mut s = String::new();
                while let Some(&d) = it.peek() {
                    if d.is_ascii_alphanumeric() || "_.+-".contains(d) {
                        s.push(d);
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push(Tok::Ident(s));
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(out)
}

fn parse_section(toks: &[Tok], pos: &mut usize, nested: bool) -> Result<Section, String> {
    let mut sec = Section::new();
    loop {
        match toks.get(*pos) {
            None if nested => return Err("missing '}'".into()),
            None => return Ok(sec),
            Some(Tok::Sym('}')) if nested => {
                *pos += 1;
                return Ok(sec);
            }
            Some(Tok::Ident(name)) => {
                let name = name.clone();
                *pos += 1;
                match toks.get(*pos) {
                    Some(Tok::Sym('=')) => {
                        *pos += 1;
                        let v = parse_value(toks, pos)?;
                        sec.insert(name, v);
                    }
                    Some(Tok::Sym('{')) => {
                        *pos += 1;
                        let s = parse_section(toks, pos, true)?;
                        sec.insert(name, Value::Section(s));
                    }
                    other => {
                        return Err(format!(
                            "expected '=' or '{{' after {name}, found {other:?}"
                        ));
                    }
                }
            }
            Some(other) => return Err(format!("expected a name, found {other:?}")),
        }
    }
}

fn parse_value(toks: &[Tok], pos: &mut usize) -> Result<Value, String> {
    match toks.get(*pos) {
        Some(Tok::Str(s)) => {
            *pos += 1;
            Ok(Value::Str(s.clone()))
        }
        Some(Tok::Int(n)) => {
            *pos += 1;
            Ok(Value::Int(*n))
        }
        Some(Tok::Sym('[')) => {
            *pos += 1;
            let mut items = Vec::new();
            loop {
                match toks.get(*pos) {
                    Some(Tok::Sym(']')) => {
                        *pos += 1;
                        return Ok(Value::List(items));
                    }
                    Some(Tok::Sym(',')) => *pos += 1,
                    Some(_) => items.push(parse_value(toks, pos)?),
                    None => return Err("missing ']'".into()),
                }
            }
        }
        other => Err(format!("expected a value, found {other:?}")),
    }
}

fn get_int(s: &Section, k: &str) -> Option<i64> {
    match s.get(k) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    }
}

fn get_str<'a>(s: &'a Section, k: &str) -> Option<&'a str> {
    match s.get(k) {
        Some(Value::Str(v)) => Some(v),
        _ => None,
    }
}

fn get_sec<'a>(s: &'a Section, k: &str) -> Option<&'a Section> {
    match s.get(k) {
        Some(Value::Section(v)) => Some(v),
        _ => None,
    }
}

/// The PV label and header fields adaptation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvHeader {
    /// The PV's UUID, without dashes (32 characters).
    pub uuid: String,
    /// Metadata areas: (byte offset from the PV start, size).
    pub metadata_areas: Vec<(u64, u64)>,
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Parses the PV label from the first 2048 bytes of a PV.
pub fn parse_pv_header(head: &[u8]) -> Result<PvHeader, String> {
    for sector in 0..4 {
        let base = sector * 512;
        if head.get(base..base + 8) != Some(b"LABELONE".as_slice()) {
            continue;
        }
        if head.get(base + 24..base + 32) != Some(b"LVM2 001".as_slice()) {
            return Err("the label is not of type 'LVM2 001'".into());
        }
        let off = le32(head, base + 20).ok_or("short label")? as usize;
        let pvh = base + off;
        let uuid = head
            .get(pvh..pvh + 32)
            .ok_or("short PV header")?
            .iter()
            .map(|&c| c as char)
            .collect::<String>();
        let mut at = pvh + 40;
        let mut lists: Vec<Vec<(u64, u64)>> = vec![Vec::new(), Vec::new()];
        for list in lists.iter_mut() {
            loop {
                let o = le64(head, at).ok_or("PV header area list runs past the label")?;
                let s = le64(head, at + 8).ok_or("PV header area list runs past the label")?;
                at += 16;
                if o == 0 && s == 0 {
                    break;
                }
                list.push((o, s));
                if list.len() > 16 {
                    return Err("PV header lists too many areas".into());
                }
            }
        }
        return Ok(PvHeader {
            uuid,
            metadata_areas: lists.swap_remove(1),
        });
    }
    Err("no LVM2 label (LABELONE) in the first four sectors".into())
}

const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;

/// Extracts the current metadata text from a metadata area (`area` = the whole area's bytes).
pub fn metadata_text(area: &[u8]) -> Result<String, String> {
    if area.get(4..20) != Some(MDA_MAGIC.as_slice()) {
        return Err("the metadata area header has the wrong magic".into());
    }
    let size = area.len() as u64;
    let off = le64(area, 40).ok_or("short metadata header")?;
    let len = le64(area, 48).ok_or("short metadata header")?;
    if off == 0 || len == 0 || off >= size || len > size {
        return Err("the metadata area holds no committed metadata".into());
    }
    let mut text = Vec::with_capacity(len as usize);
    let first = (size - off).min(len);
    text.extend_from_slice(&area[off as usize..(off + first) as usize]);
    if first < len {
        let rest = len - first;
        let from = MDA_HEADER_SIZE;
        let to = (from + rest).min(size);
        text.extend_from_slice(&area[from as usize..to as usize]);
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    String::from_utf8(text).map_err(|_| "the metadata text is not UTF-8".to_string())
}

/// Where a linear LV's bytes are on one PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearLv {
    /// Volume group name.
    pub vg: String,
    /// Logical volume name.
    pub lv: String,
    /// The PV's UUID without dashes.
    pub pv_uuid: String,
    /// Byte offset from the PV's start.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Lists the LVs of the volume group in `meta`: linear ones as [`LinearLv`], others as an error string
/// each (`Err("lv root: striped over 2 PVs")`).
pub fn logical_volumes(meta: &Section) -> Result<Vec<Result<LinearLv, String>>, String> {
    let (vg_name, vg) = meta
        .iter()
        .find_map(|(k, v)| match v {
            Value::Section(s) if s.contains_key("physical_volumes") => Some((k.clone(), s)),
            _ => None,
        })
        .ok_or("no volume group section in the metadata")?;
    let extent = get_int(vg, "extent_size").ok_or("no extent_size")? as u64 * 512;
    let pvs = get_sec(vg, "physical_volumes").ok_or("no physical_volumes")?;
    let mut out = Vec::new();
    let Some(lvs) = get_sec(vg, "logical_volumes") else {
        return Ok(out);
    };
    for (name, lv) in lvs {
        let Value::Section(lv) = lv else { continue };
        let visible = matches!(lv.get("status"), Some(Value::List(l)) if l.contains(&Value::Str("VISIBLE".into())));
        if !visible {
            continue;
        }
        let count = get_int(lv, "segment_count").unwrap_or(0);
        if count != 1 {
            out.push(Err(format!("LV {vg_name}/{name} has {count} segments")));
            continue;
        }
        let Some(seg) = get_sec(lv, "segment1") else {
            out.push(Err(format!("LV {vg_name}/{name} has no segment1")));
            continue;
        };
        let ty = get_str(seg, "type").unwrap_or("?");
        let stripes = get_int(seg, "stripe_count").unwrap_or(0);
        if ty != "striped" || stripes != 1 {
            out.push(Err(format!(
                "LV {vg_name}/{name} is of type {ty} with {stripes} stripe(s), not linear"
            )));
            continue;
        }
        let (pv_key, pv_start_extent) = match seg.get("stripes") {
            Some(Value::List(l)) => match (l.first(), l.get(1)) {
                (Some(Value::Str(p)), Some(Value::Int(n))) => (p.clone(), *n as u64),
                _ => {
                    out.push(Err(format!("LV {vg_name}/{name} has malformed stripes")));
                    continue;
                }
            },
            _ => {
                out.push(Err(format!("LV {vg_name}/{name} has no stripes")));
                continue;
            }
        };
        let Some(pv) = get_sec(pvs, &pv_key) else {
            out.push(Err(format!(
                "LV {vg_name}/{name} names unknown PV {pv_key}"
            )));
            continue;
        };
        let pe_start = get_int(pv, "pe_start").unwrap_or(0) as u64 * 512;
        let pv_uuid = get_str(pv, "id").unwrap_or("").replace('-', "");
        let extents = get_int(seg, "extent_count").unwrap_or(0) as u64;
        out.push(Ok(LinearLv {
            vg: vg_name.clone(),
            lv: name.clone(),
            pv_uuid,
            offset: pe_start + pv_start_extent * extent,
            size: extents * extent,
        }));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test reports failure
mod tests {
    use super::*;

    const META: &str = r#"labvg {
id = "abcdef-1234"
seqno = 3
format = "lvm2" # informational
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192
max_lv = 0

physical_volumes {
pv0 {
id = "Aaaa11-bbbb-cccc-dddd-eeee-ffff-gggggg"
device = "/dev/loop3"
status = ["ALLOCATABLE"]
dev_size = 4194304
pe_start = 2048
pe_count = 511
}
}

logical_volumes {
root {
id = "x"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 100
type = "striped"
stripe_count = 1
stripes = [
"pv0", 20
]
}
}
wide {
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 10
type = "striped"
stripe_count = 2
stripe_size = 128
stripes = ["pv0", 0, "pv1", 0]
}
}
pool {
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 { start_extent = 0
extent_count = 10
type = "thin-pool" }
}
hidden_meta {
status = ["READ", "WRITE"]
segment_count = 1
}
}
}
# Generated by LVM2
contents = "Text Format Volume Group"
version = 1
description = "Created *after* executing 'lvcreate \"x\"'"
creation_time = 1700000000
"#;

    #[test]
    fn parses_metadata_and_finds_linear_lv() {
        let m = parse_metadata(META).unwrap();
        assert_eq!(m.get("version"), Some(&Value::Int(1)));
        assert_eq!(
            get_str(&m, "description"),
            Some("Created *after* executing 'lvcreate \"x\"'")
        );
        let lvs = logical_volumes(&m).unwrap();
        assert_eq!(lvs.len(), 3, "the hidden LV is skipped");
        let root = lvs.iter().find_map(|l| l.as_ref().ok()).unwrap();
        assert_eq!(root.vg, "labvg");
        assert_eq!(root.lv, "root");
        assert_eq!(root.pv_uuid, "Aaaa11bbbbccccddddeeeeffffgggggg");
        assert_eq!(root.offset, 2048 * 512 + 20 * 8192 * 512);
        assert_eq!(root.size, 100 * 8192 * 512);
        let errs: Vec<_> = lvs.iter().filter_map(|l| l.as_ref().err()).collect();
        assert!(
            errs.iter()
                .any(|e| e.contains("wide") && e.contains("2 stripe"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("pool") && e.contains("thin-pool"))
        );
    }

    #[test]
    fn rejects_malformed_metadata() {
        assert!(parse_metadata("vg { a = ").is_err());
        assert!(parse_metadata("vg { a = 1").is_err());
        assert!(parse_metadata("a = \"x").is_err());
        assert!(parse_metadata("a = [1, 2").is_err());
        assert!(parse_metadata("= 1").is_err());
        assert!(logical_volumes(&parse_metadata("a = 1").unwrap()).is_err());
    }

    #[test]
    fn reads_label_and_wrapped_metadata_area() {
        let mut head = vec![0u8; 2048];
        head[512..520].copy_from_slice(b"LABELONE");
        head[512 + 20..512 + 24].copy_from_slice(&32u32.to_le_bytes());
        head[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
        let pvh = 512 + 32;
        head[pvh..pvh + 32].copy_from_slice(&[b'U'; 32]);
        let mut at = pvh + 40;
        for (o, s) in [(1u64 << 20, 0u64), (0, 0), (4096, 1 << 20), (0, 0)] {
            head[at..at + 8].copy_from_slice(&o.to_le_bytes());
            head[at + 8..at + 16].copy_from_slice(&s.to_le_bytes());
            at += 16;
        }
        let h = parse_pv_header(&head).unwrap();
        assert_eq!(h.uuid, "U".repeat(32));
        assert_eq!(h.metadata_areas, vec![(4096, 1 << 20)]);
        assert!(parse_pv_header(&[0u8; 2048]).is_err());

        // A 4 KiB area whose text wraps around the end back to just after the header.
        let mut area = vec![0u8; 4096];
        area[4..20].copy_from_slice(MDA_MAGIC);
        let text = b"vg { extent_size = 8 }";
        area[40..48].copy_from_slice(&4090u64.to_le_bytes());
        area[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        area[4090..4096].copy_from_slice(&text[..6]);
        area[512..512 + text.len() - 6].copy_from_slice(&text[6..]);
        assert_eq!(metadata_text(&area).unwrap(), "vg { extent_size = 8 }");
        area[4] = 0;
        assert!(metadata_text(&area).is_err());
    }
}

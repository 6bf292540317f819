//! Choosing the disk to deploy onto: IPA's root device hints (`device_hints.py`) and its
//! fallback of the smallest disk of at least 4 GiB (`utils.guess_root_disk`).
//!
//! A hint is `{key: expression}`; an expression is a value, optionally led by an operator of
//! oslo's `specs_matcher` (`s==`, `<in>`, `<or>`, `>=`...). Matching works on *normalised*
//! strings on both sides, exactly as IPA does: trimmed, lower-cased, and every value
//! percent-encoded (so `Samsung SSD` and `samsung   ssd` differ, but `SAMSUNG SSD` and
//! `samsung ssd` do not). Operators are recognised with a re-implementation of oslo's
//! pyparsing grammar, including its quirks: operators need no space after them (`>=10`),
//! only the leading expression is parsed, and a value that itself starts like an operator is
//! read as one.
//!
//! Deliberate differences from IPA 13, each because IPA's behaviour there is an accident:
//! * `<all-in>` means "contains every listed word". oslo's `<all-in>` wants a Python list
//!   literal as the device value, which device attributes never are, so in IPA every
//!   `<all-in>` hint fails the deployment.
//! * `size` with `<or>` compares numbers (IPA compares a float with strings: never true) and
//!   `size` accepts `<range-in> [ 10 20 ]`/`( 10 20 )`, as Ironic's own validator does (IPA 13
//!   rejects it although Ironic accepted it).
//! * `name` without a leading `/` means `/dev/<name>` (`sda` finds `/dev/sda`; in IPA it finds
//!   nothing), and a `name` of the form `/dev/disk/by-path/...` is compared with the disk's
//!   `by_path`, since the agent's disk names are always kernel names.
//! * A software RAID volume marked as the root in the target RAID configuration is not
//!   considered: software RAID is not supported yet.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use ironic_protocol::{BlockDevice, Node};
use serde_json::{Map, Value};

use crate::HardwareError;

/// Disks smaller than this are never chosen without hints (IPA's `min_size_required`).
pub const MIN_ROOT_DISK_SIZE: u64 = 4 << 30;

const GIB: f64 = (1u64 << 30) as f64;

/// The type of each hint IPA knows (`VALID_ROOT_DEVICE_HINTS`), in IPA's order.
const VALID_HINTS: [(&str, HintType); 12] = [
    ("size", HintType::Int),
    ("model", HintType::Str),
    ("wwn", HintType::Str),
    ("serial", HintType::Str),
    ("vendor", HintType::Str),
    ("wwn_with_extension", HintType::Str),
    ("wwn_vendor_extension", HintType::Str),
    ("name", HintType::Str),
    ("rotational", HintType::Bool),
    ("hctl", HintType::Str),
    ("by_path", HintType::Str),
    ("tran", HintType::Str),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HintType {
    Int,
    Str,
    Bool,
}

fn hint_type(key: &str) -> Option<HintType> {
    VALID_HINTS.iter().find(|(k, _)| *k == key).map(|(_, t)| *t)
}

/// Why hints could not be evaluated. The text is IPA's where IPA has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    #[error("The hints \"{invalid}\" are invalid. Valid hints are: \"{valid}\"")]
    UnknownHints { invalid: String, valid: String },
    #[error("Root device hint \"{0}\" expression is empty")]
    Empty(String),
    #[error("Root device hint \"{name}\" is not a string value. Hint expression: {expression}")]
    NotString { name: String, expression: String },
    #[error("Root device hint \"{name}\" is not an integer value. Current value: {expression}")]
    NotInteger { name: String, expression: String },
    #[error(
        "Root device hint \"{name}\" should be a positive integer. Current value: {expression}"
    )]
    NotPositive { name: String, expression: String },
    #[error("Root device hint \"{name}\" is not a Boolean value. Current value: {expression}")]
    NotBoolean { name: String, expression: String },
    #[error("Root device hint \"{name}\": cannot parse the expression {expression:?}")]
    Syntax { name: String, expression: String },
    #[error("Root device hint \"{name}\": operator {op} cannot compare {value:?}")]
    Incomparable {
        name: String,
        op: String,
        value: String,
    },
    #[error("root device hints must be an object, got {0}")]
    NotAnObject(String),
    #[error("skip_block_devices must be a list of hint objects, got {0}")]
    NotAList(String),
}

// ---------------------------------------------------------------------------------------------
// oslo.utils specs_matcher grammar

/// Unary operators in the order oslo's grammar tries them (`=` before `!=` is harmless: they
/// start differently; `<=` before `<` matters).
const UNARY_OPS: [&str; 14] = [
    "==", "=", "!=", "<in>", ">=", "<=", ">", "<", "s==", "s!=", "s<=", "s<", "s>=", "s>",
];
const KEYWORDS: [&str; 3] = ["<all-in>", "<or>", "<range-in>"];

fn skip_ws(s: &str, at: usize) -> usize {
    // pyparsing's default whitespace: space, tab, CR, LF.
    at + s[at..]
        .find(|c: char| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .unwrap_or(s.len() - at)
}

/// `literal` at `at` (after whitespace): the position after it.
fn literal(s: &str, at: usize, lit: &str) -> Option<usize> {
    let at = skip_ws(s, at);
    s[at..].starts_with(lit).then_some(at + lit.len())
}

fn unary_op(s: &str, at: usize) -> Option<(&'static str, usize)> {
    UNARY_OPS
        .iter()
        .find_map(|op| literal(s, at, op).map(|end| (*op, end)))
}

/// An atom: anything not starting like an operator, up to whitespace (oslo's `\S+`; Python's
/// `\S` is "not Unicode whitespace").
fn atom(s: &str, at: usize) -> Option<(String, usize)> {
    let at = skip_ws(s, at);
    let rest = &s[at..];
    if rest.is_empty()
        || UNARY_OPS.iter().any(|op| rest.starts_with(op))
        || KEYWORDS.iter().any(|k| rest.starts_with(k))
    {
        return None;
    }
    let len = rest.find(char::is_whitespace).unwrap_or(rest.len());
    (len > 0).then(|| (rest[..len].to_string(), at + len))
}

/// oslo's `make_grammar().parseString(s)`: the tokens of the leading expression (operator
/// first), or `None` for a parse error.
fn parse_spec(s: &str) -> Option<Vec<String>> {
    // disjunction: ("<or>" atom)+ -> ["<or>", atoms...]
    let mut at = 0;
    let mut atoms = Vec::new();
    while let Some(after) = literal(s, at, "<or>") {
        let Some((a, end)) = atom(s, after) else {
            break;
        };
        atoms.push(a);
        at = end;
    }
    if !atoms.is_empty() {
        return Some(std::iter::once("<or>".to_string()).chain(atoms).collect());
    }
    // nary: "<all-in>" atom+
    if let Some(mut at) = literal(s, 0, "<all-in>") {
        let mut atoms = Vec::new();
        while let Some((a, end)) = atom(s, at) {
            atoms.push(a);
            at = end;
        }
        if !atoms.is_empty() {
            return Some(
                std::iter::once("<all-in>".to_string())
                    .chain(atoms)
                    .collect(),
            );
        }
    }
    // range: "<range-in>" atom atom atom atom
    if let Some(mut at) = literal(s, 0, "<range-in>") {
        let mut atoms = Vec::new();
        while atoms.len() < 4 {
            let Some((a, end)) = atom(s, at) else {
                break;
            };
            atoms.push(a);
            at = end;
        }
        if atoms.len() == 4 {
            return Some(
                std::iter::once("<range-in>".to_string())
                    .chain(atoms)
                    .collect(),
            );
        }
    }
    // unary: op atom
    if let Some((op, end)) = unary_op(s, 0) {
        if let Some((a, _)) = atom(s, end) {
            return Some(vec![op.to_string(), a]);
        }
    }
    atom(s, 0).map(|(a, _)| vec![a])
}

/// Python's `urllib.parse.quote(text)`: UTF-8, unreserved characters and `/` kept.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An expression split into its operator (empty for none) and its values, as IPA's
/// `_extract_hint_operator_and_values`: lower-cased and trimmed.
#[derive(Debug, Clone, PartialEq)]
struct Extracted {
    op: String,
    values: Vec<String>,
}

fn extract(expression: &str, name: &str) -> Result<Extracted, HintError> {
    let expression = expression.trim().to_lowercase();
    if expression.is_empty() {
        return Err(HintError::Empty(name.to_string()));
    }
    let tokens = parse_spec(&expression).ok_or_else(|| HintError::Syntax {
        name: name.to_string(),
        expression: expression.clone(),
    })?;
    if tokens.len() <= 1 {
        return Ok(Extracted {
            op: String::new(),
            values: vec![expression],
        });
    }
    let op = tokens[0].clone();
    // `re.split(op, expression)` with empty pieces dropped before stripping, as IPA does.
    let values = expression
        .split(op.as_str())
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().to_string())
        .collect();
    Ok(Extracted { op, values })
}

fn join_normalised(op: &str, values: &[String]) -> String {
    let joined = values
        .iter()
        .map(|v| format!(" {} ", quote(v)))
        .collect::<Vec<_>>()
        .join(op);
    format!("{op}{joined}").trim().to_string()
}

/// IPA's `_normalize_hint_expression`: `"<or> foo bar <or> bar"` -> `"<or> foo%20bar <or> bar"`.
fn normalise(expression: &str, name: &str) -> Result<String, HintError> {
    let e = extract(expression, name)?;
    Ok(join_normalised(&e.op, &e.values))
}

/// Python's `str()` of a JSON value, which is what IPA's parsing sees.
fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// oslo's `strutils.bool_from_string(value, strict=True)`.
fn bool_from(v: &Value) -> Option<bool> {
    if let Value::Bool(b) = v {
        return Some(*b);
    }
    match python_str(v).trim().to_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// One parsed hint.
#[derive(Debug, Clone, PartialEq)]
enum Hint {
    /// A normalised spec with its operator, e.g. `s== samsung%20ssd` or `>= 10`.
    Spec(String),
    Bool(bool),
}

/// Hints validated and normalised as IPA's `parse_root_device_hints` does.
#[derive(Debug, Clone, PartialEq)]
pub struct RootDeviceHints {
    hints: Vec<(String, Hint)>,
    raw: Map<String, Value>,
}

impl RootDeviceHints {
    pub fn parse(raw: &Map<String, Value>) -> Result<Self, HintError> {
        let invalid: Vec<&str> = raw
            .keys()
            .map(String::as_str)
            .filter(|k| hint_type(k).is_none())
            .collect();
        if !invalid.is_empty() {
            return Err(HintError::UnknownHints {
                invalid: invalid.join(", "),
                valid: VALID_HINTS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut hints = Vec::new();
        for (name, expression) in raw {
            let text = python_str(expression);
            let hint = match hint_type(name) {
                Some(HintType::Str) => {
                    let Value::String(s) = expression else {
                        return Err(HintError::NotString {
                            name: name.clone(),
                            expression: expression.to_string(),
                        });
                    };
                    let mut e = extract(s, name)?;
                    if name == "name" {
                        for v in &mut e.values {
                            if !v.starts_with('/') {
                                *v = format!("/dev/{v}");
                            }
                        }
                    }
                    Hint::Spec(with_default_operator(
                        join_normalised(&e.op, &e.values),
                        "s==",
                    ))
                }
                Some(HintType::Int) => {
                    let e = extract(&text, name)?;
                    if e.op != "<range-in>" {
                        for v in &e.values {
                            let n: i64 = v.parse().map_err(|_| HintError::NotInteger {
                                name: name.clone(),
                                expression: text.clone(),
                            })?;
                            if n <= 0 {
                                return Err(HintError::NotPositive {
                                    name: name.clone(),
                                    expression: text.clone(),
                                });
                            }
                        }
                    }
                    Hint::Spec(with_default_operator(text, "=="))
                }
                Some(HintType::Bool) | None => {
                    Hint::Bool(bool_from(expression).ok_or_else(|| HintError::NotBoolean {
                        name: name.clone(),
                        expression: text.clone(),
                    })?)
                }
            };
            hints.push((name.clone(), hint));
        }
        Ok(RootDeviceHints {
            hints,
            raw: raw.clone(),
        })
    }

    /// The hints as the operator gave them, for messages.
    pub fn raw(&self) -> &Map<String, Value> {
        &self.raw
    }

    /// Whether `dev` satisfies every hint (IPA's `find_devices_by_hints` for one device).
    /// Errors are comparisons IPA would crash on (a numeric operator on a model name...).
    pub fn matches(&self, dev: &BlockDevice) -> Result<bool, HintError> {
        for (name, hint) in &self.hints {
            let ok = match hint {
                Hint::Bool(want) => name == "rotational" && dev.rotational == *want,
                Hint::Spec(spec) if name == "size" => {
                    match_size(dev.size as f64 / GIB, spec, name)?
                }
                Hint::Spec(spec) => {
                    let (field, value) = if name == "name" && is_by_path_spec(spec) {
                        ("by_path", dev.by_path.clone())
                    } else {
                        (name.as_str(), string_field(dev, name))
                    };
                    // Device values go through the same normalisation; an empty one skips
                    // the device, as in IPA.
                    let Ok(normalised) = normalise(value.as_deref().unwrap_or("None"), field)
                    else {
                        tracing::warn!(
                            device = dev.name,
                            attribute = field,
                            "empty attribute, skipping device"
                        );
                        return Ok(false);
                    };
                    match_str(&normalised, spec, name)?
                }
            };
            if !ok {
                tracing::debug!(device = dev.name, hint = name, "does not match");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The devices matching all hints, in the given order.
    pub fn find<'a>(&self, devices: &'a [BlockDevice]) -> Result<Vec<&'a BlockDevice>, HintError> {
        let mut found = Vec::new();
        for dev in devices {
            if self.matches(dev)? {
                found.push(dev);
            }
        }
        Ok(found)
    }
}

fn with_default_operator(expression: String, op: &str) -> String {
    match parse_spec(&expression) {
        Some(tokens) if tokens.len() > 1 => expression,
        _ => format!("{op} {expression}"),
    }
}

fn is_by_path_spec(spec: &str) -> bool {
    parse_spec(spec)
        .is_some_and(|t| t.len() > 1 && t[1..].iter().all(|v| v.starts_with("/dev/disk/by-path/")))
}

fn string_field(dev: &BlockDevice, name: &str) -> Option<String> {
    match name {
        "model" => Some(dev.model.clone()),
        "name" => Some(dev.name.clone()),
        "wwn" => dev.wwn.clone(),
        "serial" => dev.serial.clone(),
        "vendor" => dev.vendor.clone(),
        "wwn_with_extension" => dev.wwn_with_extension.clone(),
        "wwn_vendor_extension" => dev.wwn_vendor_extension.clone(),
        "hctl" => dev.hctl.clone(),
        "by_path" => dev.by_path.clone(),
        "tran" => dev.tran.clone(),
        _ => None,
    }
}

fn incomparable(name: &str, op: &str, value: &str) -> HintError {
    HintError::Incomparable {
        name: name.to_string(),
        op: op.to_string(),
        value: value.to_string(),
    }
}

/// Python's `float()` of a string, for the numeric operators.
fn float(text: &str) -> Option<f64> {
    let t = text.trim().replace('_', "");
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

fn numeric(op: &str, x: f64, y: f64) -> bool {
    match op {
        "=" | ">=" => x >= y,
        "==" => x == y,
        "!=" => x != y,
        "<=" => x <= y,
        "<" => x < y,
        ">" => x > y,
        _ => false,
    }
}

/// `specs_matcher.match(value, spec)` for a string device value.
fn match_str(value: &str, spec: &str, name: &str) -> Result<bool, HintError> {
    let tokens = parse_spec(spec).unwrap_or_else(|| vec![spec.to_string()]);
    if tokens.len() == 1 {
        return Ok(tokens[0] == value);
    }
    let (op, args) = (tokens[0].as_str(), &tokens[1..]);
    let y = args[0].as_str();
    Ok(match op {
        "s==" => value == y,
        "s!=" => value != y,
        "s<" => value < y,
        "s<=" => value <= y,
        "s>" => value > y,
        "s>=" => value >= y,
        "<in>" => value.contains(y),
        "<or>" => args.iter().any(|a| a == value),
        "<all-in>" => args
            .iter()
            .flat_map(|a| a.split("%20"))
            .filter(|w| !w.is_empty())
            .all(|w| value.contains(w)),
        "<range-in>" => return Err(incomparable(name, op, value)),
        _ => {
            let x = float(value).ok_or_else(|| incomparable(name, op, value))?;
            let y = float(y).ok_or_else(|| incomparable(name, op, y))?;
            numeric(op, x, y)
        }
    })
}

/// `specs_matcher.match(size_in_gib, spec)`: numbers compare as numbers; string operators
/// compare a float with a string, which never holds in Python.
fn match_size(gib: f64, spec: &str, name: &str) -> Result<bool, HintError> {
    let tokens = parse_spec(spec).unwrap_or_else(|| vec![spec.to_string()]);
    if tokens.len() == 1 {
        return Ok(false);
    }
    let (op, args) = (tokens[0].as_str(), &tokens[1..]);
    let num = |s: &str| float(s).ok_or_else(|| incomparable(name, op, s));
    Ok(match op {
        "s==" | "s<" | "s<=" | "s>" | "s>=" => false,
        "s!=" => true,
        "<in>" | "<all-in>" => return Err(incomparable(name, op, &gib.to_string())),
        "<or>" => {
            for a in args {
                if num(a)? == gib {
                    return Ok(true);
                }
            }
            false
        }
        "<range-in>" => {
            let (lo, hi) = (num(&args[1])?, num(&args[2])?);
            if lo > hi {
                return Err(incomparable(name, op, spec));
            }
            let lower = match args[0].as_str() {
                "[" => gib >= lo,
                "(" => gib > lo,
                _ => return Err(incomparable(name, op, spec)),
            };
            let upper = match args[3].as_str() {
                "]" => gib <= hi,
                ")" => gib < hi,
                _ => return Err(incomparable(name, op, spec)),
            };
            lower && upper
        }
        _ => numeric(op, gib, num(&args[0])?),
    })
}

// ---------------------------------------------------------------------------------------------
// get_os_install_device

/// The hints of a node: `instance_info.root_device`, else `properties.root_device` (an empty
/// object counts as none, as in IPA).
pub fn node_hints(node: &Node) -> Option<&Value> {
    fn pick(m: Option<&Map<String, Value>>) -> Option<&Value> {
        m.and_then(|m| m.get("root_device"))
            .filter(|v| !is_falsy(v))
    }
    pick(node.instance_info()).or_else(|| pick(node.properties()))
}

fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(_) => false,
    }
}

fn as_hint_map(v: &Value) -> Result<&Map<String, Value>, HintError> {
    v.as_object()
        .ok_or_else(|| HintError::NotAnObject(v.to_string()))
}

/// The devices that `properties.skip_block_devices` excludes, each with the first entry of
/// the list that matched it. Entries naming a RAID volume (`volume_name`) are for RAID
/// handling and ignored here, as in IPA. A list that is not a list of hint objects is an
/// error rather than an empty list: the operator meant to protect something.
pub fn skipped_devices(
    node: &Node,
    devices: &[BlockDevice],
) -> Result<BTreeMap<String, Value>, HintError> {
    let mut skipped = BTreeMap::new();
    let Some(list) = node.properties().and_then(|p| p.get("skip_block_devices")) else {
        return Ok(skipped);
    };
    let list = match list {
        Value::Null => return Ok(skipped),
        Value::Array(a) => a,
        other => return Err(HintError::NotAList(other.to_string())),
    };
    for entry in list {
        let hints = as_hint_map(entry)?;
        if hints.contains_key("volume_name") {
            continue;
        }
        let parsed = RootDeviceHints::parse(hints)?;
        for dev in parsed.find(devices)? {
            if !skipped.contains_key(&dev.name) {
                tracing::warn!(device = dev.name, hint = %entry, "skipping device listed in skip_block_devices");
                skipped.insert(dev.name.clone(), entry.clone());
            }
        }
    }
    Ok(skipped)
}

/// IPA's `get_os_install_device` over the disks a manager listed: skip-listed disks removed,
/// then the first disk matching the node's hints, or without hints the smallest disk of at
/// least 4 GiB (by size, then name).
pub fn select_root_device(
    node: &Node,
    devices: Vec<BlockDevice>,
) -> Result<BlockDevice, HardwareError> {
    let skipped = skipped_devices(node, &devices).map_err(|e| {
        HardwareError::DeviceNotFound(format!("Invalid skip_block_devices hints: {e}"))
    })?;
    let mut devices: Vec<BlockDevice> = devices
        .into_iter()
        .filter(|d| !skipped.contains_key(&d.name))
        .collect();
    let Some(raw) = node_hints(node) else {
        return guess_root_disk(&mut devices);
    };
    let hints_text = raw.to_string();
    let not_found = |why: String| HardwareError::DeviceNotFound(why);
    let hints = as_hint_map(raw)
        .and_then(RootDeviceHints::parse)
        .map_err(|e| {
            not_found(format!(
                "No devices could be found using the root device hints {hints_text} because \
                 they failed to validate. Error: {e}"
            ))
        })?;
    let found = hints.find(&devices).map_err(|e| {
        not_found(format!(
            "No devices could be found using the root device hints {hints_text} because they \
             failed to validate. Error: {e}"
        ))
    })?;
    match found.first() {
        Some(dev) => {
            tracing::info!(device = dev.name, node = node.uuid(), hints = %hints_text, "picked root device");
            Ok((*dev).clone())
        }
        None => Err(not_found(format!(
            "No suitable device was found for deployment using these hints {hints_text}; \
             candidates: {}",
            describe(&devices)
        ))),
    }
}

/// IPA's `guess_root_disk`.
fn guess_root_disk(devices: &mut [BlockDevice]) -> Result<BlockDevice, HardwareError> {
    devices.sort_by(|a, b| match a.size.cmp(&b.size) {
        Ordering::Equal => a.name.cmp(&b.name),
        other => other,
    });
    devices
        .iter()
        .find(|d| d.size >= MIN_ROOT_DISK_SIZE)
        .cloned()
        .ok_or_else(|| {
            HardwareError::DeviceNotFound(format!(
                "No suitable device was found for deployment - root device hints were not \
                 provided and all found block devices are smaller than {MIN_ROOT_DISK_SIZE}B; \
                 candidates: {}",
                describe(devices)
            ))
        })
}

fn describe(devices: &[BlockDevice]) -> String {
    if devices.is_empty() {
        return "none".into();
    }
    devices
        .iter()
        .map(|d| {
            let mut s = format!("{} ({} bytes", d.name, d.size);
            for (k, v) in [
                ("model", Some(&d.model).filter(|m| !m.is_empty())),
                ("vendor", d.vendor.as_ref()),
                ("serial", d.serial.as_ref()),
                ("wwn", d.wwn.as_ref()),
                ("hctl", d.hctl.as_ref()),
                ("by_path", d.by_path.as_ref()),
                ("tran", d.tran.as_ref()),
            ] {
                if let Some(v) = v {
                    s.push_str(&format!(", {k} {v}"));
                }
            }
            s.push_str(if d.rotational { ", rotational)" } else { ")" });
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GB: u64 = 1 << 30;

    fn dev(name: &str, size_gib: u64) -> BlockDevice {
        BlockDevice {
            name: format!("/dev/{name}"),
            size: size_gib * GB,
            ..BlockDevice::default()
        }
    }

    /// Three disks with every attribute set, the way IPA's tests describe theirs.
    fn disks() -> Vec<BlockDevice> {
        vec![
            BlockDevice {
                model: "Samsung SSD 860".into(),
                vendor: Some("ATA".into()),
                serial: Some("S3Z1NB0K".into()),
                wwn: Some("0x5002538e40a1b2c3".into()),
                wwn_with_extension: Some("0x5002538e40a1b2c3".into()),
                wwn_vendor_extension: None,
                hctl: Some("0:0:0:0".into()),
                by_path: Some("/dev/disk/by-path/pci-0000:00:1f.2-ata-1".into()),
                tran: Some("sata".into()),
                rotational: false,
                ..dev("sda", 64)
            },
            BlockDevice {
                model: "PERC H730".into(),
                vendor: Some("DELL".into()),
                serial: Some("6d4ae520a6c3".into()),
                wwn: Some("0x6d4ae520a6c3a200".into()),
                wwn_with_extension: Some("0x6d4ae520a6c3a2001f2e3d4c5b6a7980".into()),
                wwn_vendor_extension: Some("0x1f2e3d4c5b6a7980".into()),
                hctl: Some("1:2:0:0".into()),
                by_path: Some("/dev/disk/by-path/pci-0000:03:00.0-scsi-0:2:0:0".into()),
                tran: Some("sas".into()),
                rotational: true,
                ..dev("sdb", 120)
            },
            BlockDevice {
                model: "Ünïcode Dïsk".into(),
                vendor: Some("NVMe".into()),
                serial: Some("NV-0001".into()),
                tran: Some("nvme".into()),
                ..dev("nvme0n1", 10)
            },
        ]
    }

    fn matching(hints: Value) -> Result<Vec<String>, HintError> {
        let parsed = RootDeviceHints::parse(hints.as_object().unwrap())?;
        let devices = disks();
        Ok(parsed
            .find(&devices)?
            .into_iter()
            .map(|d| d.name.trim_start_matches("/dev/").to_string())
            .collect())
    }

    #[test]
    fn every_key_and_operator() {
        let table: Vec<(Value, &[&str])> = vec![
            // size: GiB, numeric operators, default ==
            (json!({"size": 64}), &["sda"]),
            (json!({"size": "64"}), &["sda"]),
            (json!({"size": "== 120"}), &["sdb"]),
            (json!({"size": ">= 64"}), &["sda", "sdb"]),
            (json!({"size": ">=64"}), &["sda", "sdb"]),
            (json!({"size": "> 64"}), &["sdb"]),
            (json!({"size": "<= 64"}), &["sda", "nvme0n1"]),
            (json!({"size": "< 64"}), &["nvme0n1"]),
            (json!({"size": "!= 64"}), &["sdb", "nvme0n1"]),
            (json!({"size": "= 100"}), &["sdb"]),
            (json!({"size": "<or> 10 <or> 120"}), &["sdb", "nvme0n1"]),
            (json!({"size": "<range-in> [ 10 64 ]"}), &["sda", "nvme0n1"]),
            (json!({"size": "<range-in> ( 10 64 ]"}), &["sda"]),
            (json!({"size": "<range-in> ( 10 64 )"}), &[]),
            (json!({"size": "s== 64"}), &[]),
            // strings: case-insensitive, whitespace, default s==
            (json!({"model": "samsung ssd 860"}), &["sda"]),
            (json!({"model": "  SAMSUNG SSD 860 "}), &["sda"]),
            (json!({"model": "s== PERC H730"}), &["sdb"]),
            (json!({"model": "s!= PERC H730"}), &["sda", "nvme0n1"]),
            (json!({"model": "<in> ssd"}), &["sda"]),
            (
                json!({"model": "<or> perc h730 <or> samsung ssd 860"}),
                &["sda", "sdb"],
            ),
            (json!({"model": "<all-in> samsung 860"}), &["sda"]),
            (json!({"model": "s< q"}), &["sdb", "nvme0n1"]),
            (json!({"model": "s<= perc h730"}), &["sdb", "nvme0n1"]),
            (json!({"model": "s> q"}), &["sda"]),
            (json!({"model": "s>= samsung ssd 860"}), &["sda"]),
            (json!({"model": "ünïcode dïsk"}), &["nvme0n1"]),
            (json!({"model": "ÜNÏCODE DÏSK"}), &["nvme0n1"]),
            (json!({"vendor": "dell"}), &["sdb"]),
            (json!({"serial": "s3z1nb0k"}), &["sda"]),
            (json!({"wwn": "0x6D4AE520A6C3A200"}), &["sdb"]),
            (json!({"wwn_with_extension": "<in> 1f2e3d4c"}), &["sdb"]),
            (
                json!({"wwn_vendor_extension": "0x1f2e3d4c5b6a7980"}),
                &["sdb"],
            ),
            // A missing attribute is the string "None", as Python's str(None).
            (
                json!({"wwn_vendor_extension": "s!= 0x1f2e3d4c5b6a7980"}),
                &["sda", "nvme0n1"],
            ),
            (json!({"hctl": "1:2:0:0"}), &["sdb"]),
            (
                json!({"by_path": "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"}),
                &["sda"],
            ),
            (json!({"tran": "<or> sas <or> nvme"}), &["sdb", "nvme0n1"]),
            // bool
            (json!({"rotational": true}), &["sdb"]),
            (json!({"rotational": "false"}), &["sda", "nvme0n1"]),
            (json!({"rotational": "yes"}), &["sdb"]),
            (json!({"rotational": 0}), &["sda", "nvme0n1"]),
            // name: full, bare, by-path, operators
            (json!({"name": "/dev/sdb"}), &["sdb"]),
            (json!({"name": "sdb"}), &["sdb"]),
            (json!({"name": "s== nvme0n1"}), &["nvme0n1"]),
            (json!({"name": "<or> sda <or> /dev/sdb"}), &["sda", "sdb"]),
            (json!({"name": "<in> sd"}), &["sda", "sdb"]),
            (
                json!({"name": "/dev/disk/by-path/pci-0000:03:00.0-scsi-0:2:0:0"}),
                &["sdb"],
            ),
            // several hints: all must hold
            (
                json!({"size": ">= 10", "rotational": false}),
                &["sda", "nvme0n1"],
            ),
            (
                json!({"size": ">= 10", "rotational": false, "tran": "nvme"}),
                &["nvme0n1"],
            ),
        ];
        for (hints, want) in table {
            assert_eq!(matching(hints.clone()).unwrap(), want, "{hints}");
        }
    }

    #[test]
    fn invalid_hints_are_rejected_with_ipas_messages() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"colour": "red"}), "The hints \"colour\" are invalid"),
            (json!({"size": "big"}), "is not an integer value"),
            (json!({"size": 0}), "should be a positive integer"),
            (json!({"size": 10.5}), "is not an integer value"),
            (json!({"model": 5}), "is not a string value"),
            (json!({"rotational": "maybe"}), "is not a Boolean value"),
            (json!({"serial": "   "}), "expression is empty"),
        ];
        for (hints, want) in cases {
            let err = RootDeviceHints::parse(hints.as_object().unwrap()).unwrap_err();
            assert!(err.to_string().contains(want), "{hints}: {err}");
        }
        // A numeric operator on a string attribute cannot be evaluated.
        assert!(matching(json!({"model": ">= 5"})).is_err());
    }

    #[test]
    fn normalisation_matches_ipa() {
        assert_eq!(
            normalise("<or> foo bar <or> bar", "m").unwrap(),
            "<or> foo%20bar <or> bar"
        );
        assert_eq!(normalise("  Foo  ", "m").unwrap(), "foo");
        assert_eq!(normalise("s==  A B", "m").unwrap(), "s== a%20b");
        assert_eq!(normalise("ü", "m").unwrap(), "%C3%BC");
        assert_eq!(
            parse_spec("<range-in> [ 1 2 ]").unwrap(),
            ["<range-in>", "[", "1", "2", "]"]
        );
        assert_eq!(parse_spec(">=10").unwrap(), [">=", "10"]);
        assert_eq!(parse_spec("s== a b").unwrap(), ["s==", "a"]);
        assert_eq!(parse_spec("<all-in> a b").unwrap(), ["<all-in>", "a", "b"]);
        assert_eq!(parse_spec("sda").unwrap(), ["sda"]);
        assert_eq!(parse_spec("<or>"), Some(vec!["<".into(), "or>".into()]));
        assert_eq!(parse_spec("=="), None);
    }

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn hints_come_from_instance_info_then_properties() {
        let n = node(
            json!({"instance_info": {"root_device": {"name": "/dev/sdb"}},
                            "properties": {"root_device": {"name": "/dev/sda"}}}),
        );
        assert_eq!(select_root_device(&n, disks()).unwrap().name, "/dev/sdb");
        let n = node(json!({"instance_info": {"root_device": {}},
                            "properties": {"root_device": {"name": "/dev/sda"}}}));
        assert_eq!(select_root_device(&n, disks()).unwrap().name, "/dev/sda");
    }

    #[test]
    fn without_hints_the_smallest_disk_of_4_gib() {
        let n = node(json!({}));
        assert_eq!(
            select_root_device(&n, disks()).unwrap().name,
            "/dev/nvme0n1"
        );
        // Ties on size go by name; disks under 4 GiB are never picked.
        let devices = vec![dev("sdc", 8), dev("sdb", 8), dev("sda", 3)];
        assert_eq!(select_root_device(&n, devices).unwrap().name, "/dev/sdb");
        let err = select_root_device(&n, vec![dev("sda", 3)]).unwrap_err();
        assert!(
            err.to_string().contains("smaller than 4294967296B")
                && err.to_string().contains("/dev/sda"),
            "{err}"
        );
        assert!(matches!(err, HardwareError::DeviceNotFound(_)));
    }

    #[test]
    fn skip_block_devices_are_excluded() {
        let n = node(json!({"properties": {"skip_block_devices": [
            {"name": "/dev/nvme0n1"}, {"volume_name": "raid-root"}, {"tran": "sata"}]}}));
        assert_eq!(select_root_device(&n, disks()).unwrap().name, "/dev/sdb");
        let n = node(
            json!({"properties": {"skip_block_devices": [{"name": "/dev/sdb"}],
                                           "root_device": {"rotational": true}}}),
        );
        assert!(select_root_device(&n, disks()).is_err());
    }

    #[test]
    fn the_generic_manager_answers_through_dispatch() {
        use crate::generic::block_devices::tests::SysFixture;
        use crate::generic::{GenericHardwareManager, GenericOptions};
        let fx = SysFixture::new();
        fx.disk("sda", "8:0", 16 << 21).disk("sdb", "8:16", 8 << 21);
        let guard = blockdev::DeviceGuard::new(true, vec![], fx.sys());
        let generic =
            GenericHardwareManager::new(guard, GenericOptions::default()).with_dev_root(fx.dev());
        let managers = crate::Managers::new(vec![Box::new(generic)]).unwrap();
        let picked = managers.get_os_install_device(&node(json!({}))).unwrap();
        assert_eq!(picked.name, fx.dev().join("sdb").to_string_lossy());
        let n = node(json!({"properties": {"root_device": {"size": 16}}}));
        let picked = managers.get_os_install_device(&n).unwrap();
        assert_eq!(picked.name, fx.dev().join("sda").to_string_lossy());
    }

    #[test]
    fn no_match_names_the_hints_and_the_candidates() {
        let n = node(json!({"properties": {"root_device": {"serial": "nope"}}}));
        let err = select_root_device(&n, disks()).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "No suitable device was found for deployment using these hints {\"serial\":\"nope\"}"
            ),
            "{err}"
        );
        assert!(
            err.contains("/dev/sda (68719476736 bytes, model Samsung SSD 860"),
            "{err}"
        );
        let n = node(json!({"properties": {"root_device": {"size": "huge"}}}));
        let err = select_root_device(&n, disks()).unwrap_err().to_string();
        assert!(err.contains("failed to validate"), "{err}");
    }
}

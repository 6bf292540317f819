//! Validation of a step's arguments against the `argsinfo` the step advertises, with the
//! rules Ironic's conductor applies to user-supplied steps (`conductor/steps.py`): an argument
//! the step does not declare is rejected, a declared `required` one must be present. The agent
//! checks again before running a step because not every caller is the conductor's validated
//! path (a deploy template, a service step sent by another tool), and because a manager must be
//! able to rely on its required arguments being there.

use ironic_protocol::{Step, StepKind};
use serde_json::{Map, Value};

use crate::HardwareError;

/// Checks `args` against `step.argsinfo`.
///
/// A step that declares no `argsinfo` at all (`None`) takes whatever the conductor sends: that
/// is how the conductor drives its internal steps (`write_image` receives `image_info` and
/// `configdrive` without declaring them), and IPA does not check them either. A step that
/// declares `argsinfo`, even an empty one, gets the conductor's rules.
pub fn validate_args(
    kind: StepKind,
    step: &Step,
    args: &Map<String, Value>,
) -> Result<(), HardwareError> {
    let Some(argsinfo) = &step.argsinfo else {
        return Ok(());
    };
    let mut problems = Vec::new();
    let unexpected: Vec<&str> = args
        .keys()
        .filter(|k| !argsinfo.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unexpected.is_empty() {
        let mut accepted: Vec<&str> = argsinfo.keys().map(String::as_str).collect();
        accepted.sort_unstable();
        problems.push(format!(
            "unexpected arguments: {} (the step accepts: {})",
            unexpected.join(", "),
            if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            }
        ));
    }
    let missing: Vec<String> = argsinfo
        .iter()
        .filter(|(name, info)| is_required(info) && !args.contains_key(*name))
        .map(|(name, info)| match description(info) {
            Some(d) => format!("{name} ({d})"),
            None => name.clone(),
        })
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing required arguments: {}",
            missing.join(", ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(HardwareError::InvalidArguments(format!(
        "{} step {} (interface {}): {}",
        kind.as_str(),
        step.step,
        step.interface,
        problems.join("; ")
    )))
}

/// Checks that an `argsinfo` a manager advertises has the shape the conductor expects:
/// `{name: {"description": str, "required": bool}}`. Used for manifests written by hand.
pub fn check_argsinfo_shape(argsinfo: &Map<String, Value>) -> Result<(), String> {
    for (name, info) in argsinfo {
        let Value::Object(info) = info else {
            return Err(format!(
                "argsinfo.{name} must be an object with \"description\" and \"required\""
            ));
        };
        match info.get("description") {
            Some(Value::String(_)) => {}
            _ => return Err(format!("argsinfo.{name}.description must be a string")),
        }
        match info.get("required") {
            None | Some(Value::Bool(_)) => {}
            _ => return Err(format!("argsinfo.{name}.required must be true or false")),
        }
    }
    Ok(())
}

fn is_required(info: &Value) -> bool {
    info.get("required")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn description(info: &Value) -> Option<&str> {
    info.get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(argsinfo: Option<Value>) -> Step {
        let mut s = Step::new("update_firmware", 0).interface("management");
        s.argsinfo = argsinfo.map(|v| v.as_object().unwrap().clone());
        s
    }

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn declared_arguments_are_checked() {
        let s = step(Some(json!({
            "url": {"description": "where the image is", "required": true},
            "force": {"description": "flash even the same version", "required": false},
        })));
        assert!(validate_args(StepKind::Clean, &s, &args(json!({"url": "x"}))).is_ok());
        assert!(validate_args(
            StepKind::Clean,
            &s,
            &args(json!({"url": "x", "force": true}))
        )
        .is_ok());

        let e = validate_args(StepKind::Clean, &s, &args(json!({"force": true}))).unwrap_err();
        assert!(matches!(e, HardwareError::InvalidArguments(_)));
        let reported = e.to_command_error(ironic_protocol::ErrorClass::CleaningError);
        assert_eq!(
            reported.kind,
            ironic_protocol::ErrorClass::InvalidCommandParamsError
        );
        assert_eq!(reported.code, 400);
        assert_eq!(
            e.to_string(),
            "clean step update_firmware (interface management): missing required arguments: \
             url (where the image is)"
        );

        let e = validate_args(
            StepKind::Service,
            &s,
            &args(json!({"url": "x", "colour": "red", "mode": 1})),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "service step update_firmware (interface management): unexpected arguments: colour, \
             mode (the step accepts: force, url)"
        );

        let e = validate_args(StepKind::Clean, &s, &args(json!({"colour": "red"})))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unexpected arguments: colour") && e.contains("missing required"),
            "{e}"
        );
    }

    #[test]
    fn an_empty_argsinfo_takes_no_arguments() {
        let s = step(Some(json!({})));
        assert!(validate_args(StepKind::Clean, &s, &Map::new()).is_ok());
        let e = validate_args(StepKind::Clean, &s, &args(json!({"x": 1})))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("unexpected arguments: x (the step accepts: none)"),
            "{e}"
        );
    }

    #[test]
    fn no_argsinfo_takes_anything() {
        // write_image is driven with image_info/configdrive it does not declare.
        let s = step(None);
        assert!(validate_args(
            StepKind::Deploy,
            &s,
            &args(json!({"image_info": {}, "configdrive": null}))
        )
        .is_ok());
    }

    #[test]
    fn argsinfo_shape() {
        assert!(check_argsinfo_shape(&args(json!({"a": {"description": "d"}}))).is_ok());
        assert!(
            check_argsinfo_shape(&args(json!({"a": {"description": "d", "required": true}})))
                .is_ok()
        );
        assert!(check_argsinfo_shape(&args(json!({"a": "text"}))).is_err());
        assert!(check_argsinfo_shape(&args(json!({"a": {"required": true}}))).is_err());
        assert!(
            check_argsinfo_shape(&args(json!({"a": {"description": "d", "required": "yes"}})))
                .is_err()
        );
    }
}

//! `image_info`: what the conductor says about the image to write, in `standby.prepare_image`,
//! `standby.cache_image` and the `write_image` deploy step.
//!
//! Ironic 39 builds it in `AgentDeploy.write_image` (`drivers/modules/agent.py`): `id`,
//! `urls`, `disk_format`, `container_format`, `stream_raw_images`, the checksum fields, the
//! image server's credentials, `image_request_authorization`, `proxies`/`no_proxy`,
//! `node_uuid`, for partition images the `PARTITION_IMAGE_LABELS` (`root_mb`, `swap_mb`,
//! `ephemeral_mb`, `image_type`, `deploy_boot_mode`...), and `configdrive`. The fields the
//! agent acts on are typed here; everything else is kept as sent in [`ImageInfo::extra`].
//!
//! Parsing applies the structural half of IPA's `_validate_image_info` with IPA's messages
//! (they reach the operator as HTTP 400 "Invalid command parameters"); the half that depends
//! on the agent's md5 setting is the image pipeline's.

use serde_json::{Map, Value};

/// `image_info`, parsed once where the command arrives.
#[derive(Clone, PartialEq, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct ImageInfo {
    /// `id`: Glance's image UUID, or for an HTTP `image_source` the URL's last segment, a
    /// Swift temp URL's signature included: redact it before it reaches a log line.
    pub id: String,
    /// Tried in order.
    pub urls: Vec<String>,
    /// `checksum`: a hex digest or the URL of a checksum file; never empty.
    pub checksum: Option<String>,
    /// `os_hash_algo` and `os_hash_value`: both or neither, never empty.
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    /// `disk_format` as Glance has it (`raw`, `qcow2`...), for the format policy.
    pub disk_format: Option<String>,
    /// `image_type`: `partition` for partition images; whole-disk otherwise.
    pub image_type: Option<String>,
    /// `deploy_boot_mode` (`uefi` or `bios`), sent for partition images.
    pub deploy_boot_mode: Option<String>,
    /// `proxies` by scheme of the image URL; empty values are absent.
    pub proxies: Proxies,
    /// `no_proxy`: hosts that bypass the proxies, comma separated.
    pub no_proxy: Option<String>,
    /// `image_request_authorization`: base64 of an `Authorization` header value. A secret.
    pub image_request_authorization: Option<String>,
    /// `image_server_auth_strategy` (`http_basic` or `noauth`).
    pub image_server_auth_strategy: Option<String>,
    pub image_server_user: Option<String>,
    /// A secret.
    pub image_server_password: Option<String>,
    /// `configdrive` inside `image_info` (IPA's backward compatibility; `null` is absent).
    pub configdrive: Option<Value>,
    /// Everything else, as sent (`node_uuid`, `container_format`, the partition sizes...).
    pub extra: Map<String, Value>,
}

/// `image_info.proxies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub http: Option<String>,
    pub https: Option<String>,
}

/// The partition-image fields of `image_info`, read when the image is a partition image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionSizes {
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub ephemeral_format: Option<String>,
    pub preserve_ephemeral: bool,
}

impl std::fmt::Debug for ImageInfo {
    /// Without the secrets and without the URLs, whose query strings may carry signatures.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("ImageInfo")
            .field("urls", &format_args!("[{} URLs]", self.urls.len()))
            .field("checksum", &self.checksum.as_ref().map(|_| "…"))
            .field("os_hash_algo", &self.os_hash_algo)
            .field("disk_format", &self.disk_format)
            .field("image_type", &self.image_type)
            .field("deploy_boot_mode", &self.deploy_boot_mode)
            .field(
                "image_request_authorization",
                &secret(&self.image_request_authorization),
            )
            .field(
                "image_server_auth_strategy",
                &self.image_server_auth_strategy,
            )
            .field("image_server_user", &self.image_server_user)
            .field(
                "image_server_password",
                &secret(&self.image_server_password),
            )
            .field("configdrive", &self.configdrive.as_ref().map(|_| "…"))
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ImageInfo {
    /// Whether this is a partition image (`image_type: partition`).
    pub fn is_partition_image(&self) -> bool {
        self.image_type.as_deref() == Some("partition")
    }

    /// `root_mb` (required), `swap_mb`, `ephemeral_mb` (numbers or their text),
    /// `ephemeral_format` and `preserve_ephemeral`, as IPA reads them for a partition image.
    pub fn partition_sizes(&self) -> Result<PartitionSizes, String> {
        let mb = |k: &str, required: bool| -> Result<u64, String> {
            match self.extra.get(k) {
                None | Some(Value::Null) if !required => Ok(0),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .ok_or_else(|| format!("{k} must be a non-negative integer")),
                Some(Value::String(s)) => s
                    .trim()
                    .parse()
                    .map_err(|_| format!("{k} must be an integer, got {s:?}")),
                other => Err(format!("{k} must be an integer, got {other:?}")),
            }
        };
        let preserve = match self.extra.get("preserve_ephemeral") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        Ok(PartitionSizes {
            root_mb: mb("root_mb", true)?,
            swap_mb: mb("swap_mb", false)?,
            ephemeral_mb: mb("ephemeral_mb", false)?,
            ephemeral_format: match self.extra.get("ephemeral_format") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            },
            preserve_ephemeral: preserve,
        })
    }
}

impl TryFrom<Value> for ImageInfo {
    type Error = String;

    fn try_from(value: Value) -> Result<Self, String> {
        let Value::Object(mut map) = value else {
            return Err("Image info must be an object.".into());
        };
        for field in ["id", "urls"] {
            if !map.contains_key(field) {
                return Err(format!("Image is missing '{field}' field."));
            }
        }
        let id = match map.remove("id") {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => return Err("Image is missing 'id' field.".into()),
            Some(other) => other.to_string(),
        };
        let urls = match map.remove("urls") {
            Some(Value::Array(list)) if !list.is_empty() => list
                .into_iter()
                .map(|u| match u {
                    Value::String(s) => Ok(s),
                    _ => Err(format!("image {id}: 'urls' must hold strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err("Image 'urls' must be a list with at least one element.".into()),
        };
        let non_empty = |map: &mut Map<String, Value>, key: &str| match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
            Some(_) => Err(format!("Image '{key}' must be a non-empty string.")),
        };
        let checksum = non_empty(&mut map, "checksum")?;
        let has = |map: &Map<String, Value>, key: &str| map.get(key).is_some_and(|v| !v.is_null());
        let (os_hash_algo, os_hash_value) =
            if has(&map, "os_hash_algo") || has(&map, "os_hash_value") {
                let algo = non_empty(&mut map, "os_hash_algo")?
                    .ok_or("Image 'os_hash_algo' must be a non-empty string.")?;
                let value = non_empty(&mut map, "os_hash_value")?
                    .ok_or("Image 'os_hash_value' must be a non-empty string.")?;
                (Some(algo), Some(value))
            } else {
                map.remove("os_hash_algo");
                map.remove("os_hash_value");
                (None, None)
            };
        // Optional text: anything but a non-empty string is absent, as IPA's `.get()`s treat
        // it; the key stays out of `extra` either way.
        let text = |map: &mut Map<String, Value>, key: &str| match map.remove(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        };
        let proxies = match map.remove("proxies") {
            Some(Value::Object(mut p)) => Proxies {
                http: text(&mut p, "http"),
                https: text(&mut p, "https"),
            },
            _ => Proxies::default(),
        };
        Ok(ImageInfo {
            id,
            urls,
            checksum,
            os_hash_algo,
            os_hash_value,
            disk_format: text(&mut map, "disk_format"),
            image_type: text(&mut map, "image_type"),
            deploy_boot_mode: text(&mut map, "deploy_boot_mode"),
            proxies,
            no_proxy: text(&mut map, "no_proxy"),
            image_request_authorization: text(&mut map, "image_request_authorization"),
            image_server_auth_strategy: text(&mut map, "image_server_auth_strategy"),
            image_server_user: text(&mut map, "image_server_user"),
            image_server_password: text(&mut map, "image_server_password"),
            configdrive: map.remove("configdrive").filter(|v| !v.is_null()),
            extra: map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn parse(v: Value) -> Result<ImageInfo, String> {
        ImageInfo::try_from(v)
    }

    fn info(extra: Value) -> Value {
        let mut v = json!({"id": "img-9", "urls": ["http://127.0.0.1:1/images/disk.qcow2"]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn structural_validation_matches_ipa() {
        let err = |v: Value| parse(v).unwrap_err();
        assert_eq!(err(json!([1])), "Image info must be an object.");
        assert_eq!(err(json!({"urls": ["x"]})), "Image is missing 'id' field.");
        assert_eq!(err(json!({"id": "a"})), "Image is missing 'urls' field.");
        assert_eq!(
            err(json!({"id": "a", "urls": []})),
            "Image 'urls' must be a list with at least one element."
        );
        assert_eq!(
            err(json!({"id": "a", "urls": "http://x"})),
            "Image 'urls' must be a list with at least one element."
        );
        assert_eq!(
            err(json!({"id": "a", "urls": [5]})),
            "image a: 'urls' must hold strings"
        );
        assert_eq!(
            err(info(json!({"checksum": ""}))),
            "Image 'checksum' must be a non-empty string."
        );
        assert_eq!(
            err(info(json!({"checksum": 5}))),
            "Image 'checksum' must be a non-empty string."
        );
        assert_eq!(
            err(info(json!({"os_hash_value": SHA256_ABC}))),
            "Image 'os_hash_algo' must be a non-empty string."
        );
        assert_eq!(
            err(info(json!({"os_hash_algo": "sha256"}))),
            "Image 'os_hash_value' must be a non-empty string."
        );
        assert_eq!(
            err(info(
                json!({"os_hash_algo": "", "os_hash_value": SHA256_ABC})
            )),
            "Image 'os_hash_algo' must be a non-empty string."
        );
    }

    #[test]
    fn nulls_are_absent_and_ids_may_be_numbers() {
        let i = parse(info(json!({
            "id": 42,
            "checksum": null, "os_hash_algo": "sha256", "os_hash_value": SHA256_ABC,
            "disk_format": null, "configdrive": null, "proxies": {"http": "", "https": null},
        })))
        .unwrap();
        assert_eq!(i.id, "42");
        assert_eq!(i.checksum, None);
        assert_eq!(i.os_hash_algo.as_deref(), Some("sha256"));
        assert_eq!(i.disk_format, None);
        assert_eq!(i.configdrive, None);
        assert_eq!(i.proxies, Proxies::default());
        assert!(i.extra.is_empty(), "{:?}", i.extra);
    }

    /// The body Ironic 39's `write_image` sends for a partition image (captured shape, values
    /// of a test node), through the command parameters the agent deserialises.
    #[test]
    fn ironic_write_image_args_parse() {
        #[derive(serde::Deserialize)]
        struct Args {
            image_info: ImageInfo,
        }
        let args: Args = serde_json::from_value(json!({
            "image_info": {
                "id": "disk.img", "urls": ["http://10.0.2.2:8089/disk.img?temp_url_sig=SIG"],
                "disk_format": "raw", "container_format": "bare", "stream_raw_images": true,
                "os_hash_algo": "sha256", "os_hash_value": SHA256_ABC,
                "image_server_auth_strategy": "http_basic", "image_server_user": "alice",
                "image_server_password": "s3cret",
                "image_request_authorization": "QmVhcmVyIHQwaw==",
                "proxies": {"http": "http://proxy:3128"}, "no_proxy": "10.0.2.2",
                "node_uuid": "21a2ee1c-0eb0-48fc-836e-bbcfe242af5c",
                "kernel": null, "ramdisk": null, "root_gb": 10, "root_mb": 10240,
                "swap_mb": "512", "ephemeral_mb": 0, "ephemeral_format": null,
                "configdrive": null, "preserve_ephemeral": "True", "image_type": "partition",
                "deploy_boot_mode": "uefi", "boot_option": "local", "disk_label": "gpt",
            },
            "configdrive": null,
        }))
        .unwrap();
        let i = args.image_info;
        assert!(i.is_partition_image());
        assert_eq!(i.urls.len(), 1);
        assert_eq!(i.proxies.http.as_deref(), Some("http://proxy:3128"));
        assert_eq!(i.proxies.https, None);
        assert_eq!(i.no_proxy.as_deref(), Some("10.0.2.2"));
        assert_eq!(i.deploy_boot_mode.as_deref(), Some("uefi"));
        assert_eq!(
            i.partition_sizes().unwrap(),
            PartitionSizes {
                root_mb: 10240,
                swap_mb: 512,
                ephemeral_mb: 0,
                ephemeral_format: None,
                preserve_ephemeral: true,
            }
        );
        assert_eq!(i.extra["node_uuid"], "21a2ee1c-0eb0-48fc-836e-bbcfe242af5c");
        assert_eq!(i.extra["disk_label"], "gpt");
        // Debug shows neither the secrets nor the signed URL.
        let debug = format!("{i:?}");
        for secret in ["s3cret", "QmVhcmVy", "SIG", SHA256_ABC] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn partition_sizes_follow_ipa() {
        let sizes = |extra: Value| parse(info(extra)).unwrap().partition_sizes();
        assert_eq!(
            sizes(json!({})).unwrap_err(),
            "root_mb must be an integer, got None"
        );
        assert_eq!(
            sizes(json!({"root_mb": -1})).unwrap_err(),
            "root_mb must be a non-negative integer"
        );
        assert_eq!(
            sizes(json!({"root_mb": 1, "swap_mb": "x"})).unwrap_err(),
            "swap_mb must be an integer, got \"x\""
        );
        let s = sizes(json!({"root_mb": "2048", "ephemeral_format": "ext4"})).unwrap();
        assert_eq!((s.root_mb, s.swap_mb), (2048, 0));
        assert_eq!(s.ephemeral_format.as_deref(), Some("ext4"));
        assert!(!s.preserve_ephemeral);
    }
}

//! The optional config file: `url`, `user`, `password` and `cacert` in TOML, so scripts need
//! not repeat them and passwords stay out of shell history.

use crate::api::{one_line, Failure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const KEYS: [&str; 4] = ["url", "user", "password", "cacert"];

/// `$XDG_CONFIG_HOME/ferryctl/config.toml`, else `~/.config/ferryctl/config.toml`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("ferryctl").join("config.toml"))
}

/// Reads `path` (which must exist), or the default file if there is one.
pub fn load(path: Option<&Path>) -> Result<HashMap<String, String>, Failure> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(HashMap::new()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HashMap::new())
        }
        Err(e) => {
            return Err(Failure::Fatal(format!(
                "cannot read config file {}: {e}",
                path.display()
            )))
        }
    };
    parse(&text).map_err(|e| Failure::Fatal(format!("config file {}: {e}", path.display())))
}

fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| one_line(e.message()))?;
    let mut out = HashMap::new();
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!("unknown key '{key}' (known: {})", KEYS.join(", ")));
        }
        let value = value
            .as_str()
            .ok_or_else(|| format!("'{key}' must be a string"))?;
        out.insert(key, value.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_known_keys_and_refuses_others() {
        let m = parse("url = \"http://new:15672\"\nuser = \"ops\"\npassword = \"p\"\n").unwrap();
        assert_eq!(m["url"], "http://new:15672");
        assert_eq!(m["user"], "ops");
        assert!(parse("uri = \"x\"")
            .unwrap_err()
            .contains("unknown key 'uri'"));
        assert!(parse("user = 3").unwrap_err().contains("must be a string"));
        assert!(parse("user = ").is_err());
    }
}

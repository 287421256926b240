//! A plugin's `config` table from weir.toml.

/// The key/value pairs given to a plugin's `init`, in configuration order.
///
/// Values are strings; the accessors parse and split them so each plugin
/// reports configuration mistakes the same way (the message names the key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Wraps the pairs the host passed to `init`.
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// The value of `key`; when a key is repeated the last one wins, as a
    /// later line overrides an earlier one.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing required config key `{key}`"))
    }

    /// The value of `key` parsed as `T`; `Ok(None)` when absent.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|e| format!("config key `{key}`: cannot parse {v:?}: {e}"))
            })
            .transpose()
    }

    /// The comma-separated items of `key`, trimmed, empty items skipped.
    /// Empty when the key is absent.
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// Every pair whose key starts with `prefix`, with the prefix removed.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries
            .iter()
            .filter_map(move |(k, v)| Some((k.strip_prefix(prefix)?, v.as_str())))
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Config {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Config::new(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Splits `a, b,,c` into `["a", "b", "c"]`.
pub(crate) fn split_list(s: &str) -> Vec<&str> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_prefixes_and_numbers() {
        let config: Config = [
            ("tables", " public.a, ,public.b "),
            ("route.public.a", "kafka"),
            ("limit", "10"),
            ("limit", "12"),
        ]
        .into_iter()
        .collect();
        assert_eq!(config.list("tables"), ["public.a", "public.b"]);
        assert!(config.list("missing").is_empty());
        assert_eq!(
            config.with_prefix("route.").collect::<Vec<_>>(),
            [("public.a", "kafka")]
        );
        assert_eq!(config.parse::<u32>("limit"), Ok(Some(12)));
        assert!(
            config
                .parse::<u32>("tables")
                .unwrap_err()
                .contains("`tables`")
        );
        assert!(config.require("nope").unwrap_err().contains("`nope`"));
    }
}

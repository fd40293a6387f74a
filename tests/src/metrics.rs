//! A strict reader of the OpenMetrics text `/metrics` serves, for tests:
//! every line must be a `# HELP`, `# TYPE` or `# UNIT` comment, a sample of a
//! family declared before it, or the final `# EOF`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

/// The samples of one scrape: `name{labels}` (as written) → value, and the
/// declared families with their types.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Every sample, keyed by its name and label set as written.
    pub samples: BTreeMap<String, f64>,
    /// Family name → declared type.
    pub families: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of a sample without labels.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples.get(name).copied()
    }

    /// The sum of every sample of `name` (any labels) whose label set
    /// contains all of `with`.
    pub fn sum(&self, name: &str, with: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                let (n, labels) = k.split_once('{').unwrap_or((k.as_str(), ""));
                n == name && with.iter().all(|w| labels.contains(w))
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample name belongs to (counter and histogram suffixes off).
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, String>) -> Option<&'a str> {
    if families.contains_key(name) {
        return Some(name);
    }
    ["_total", "_bucket", "_count", "_sum", "_created"]
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|f| families.contains_key(*f))
}

/// Parses a scrape, refusing anything that is not well-formed.
pub fn parse(text: &str) -> Result<Scrape> {
    let mut scrape = Scrape::default();
    let mut helped = BTreeSet::new();
    let lines: Vec<&str> = text.lines().collect();
    match lines.last() {
        Some(&"# EOF") => {}
        _ => bail!("the scrape does not end with # EOF"),
    }
    for (i, line) in lines[..lines.len() - 1].iter().enumerate() {
        let at = || format!("line {}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or_default();
            let name = parts.next().with_context(at)?;
            if !valid_name(name) {
                bail!("bad family name, {}", at());
            }
            match kind {
                "HELP" => {
                    helped.insert(name.to_string());
                }
                "TYPE" => {
                    let t = parts.next().with_context(at)?;
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ]
                    .contains(&t)
                    {
                        bail!("unknown type, {}", at());
                    }
                    scrape.families.insert(name.to_string(), t.to_string());
                }
                "UNIT" => {}
                _ => bail!("unknown comment, {}", at()),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').with_context(at)?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().with_context(at)?,
        };
        let name = series.split_once('{').map_or(series, |(n, _)| n);
        if !valid_name(name) {
            bail!("bad sample name, {}", at());
        }
        if let Some((_, labels)) = series.split_once('{') {
            if !labels.ends_with('}') {
                bail!("unterminated labels, {}", at());
            }
        }
        if family_of(name, &scrape.families).is_none() {
            bail!("sample of an undeclared family, {}", at());
        }
        if scrape.samples.insert(series.to_string(), value).is_some() {
            bail!("duplicate sample, {}", at());
        }
    }
    for family in scrape.families.keys() {
        if !helped.contains(family) {
            bail!("family {family} has no HELP");
        }
    }
    Ok(scrape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reader_accepts_good_text_and_refuses_bad() {
        let good = "# HELP a A.\n# TYPE a counter\na_total 3\n# EOF\n";
        assert_eq!(
            parse(good).map(|s| s.value("a_total")).ok().flatten(),
            Some(3.0)
        );
        for bad in [
            "# HELP a A.\n# TYPE a counter\na_total 3\n",
            "b 1\n# EOF\n",
            "# HELP a A.\n# TYPE a gauge\na x\n# EOF\n",
            "# HELP a A.\n# TYPE a gauge\na 1\na 2\n# EOF\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}

//! Puppet's `autosign.conf` whitelist: which certnames it signs without an operator.

/// One line of the whitelist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `*`: every certname.
    Any,
    /// `*.example.com`: the labels after the first, compared case-insensitively from the right.
    Domain(Vec<String>),
    /// Any other line: the exact certname.
    Exact(String),
    /// A line puppetserver refuses (it has `#` or a space inside): never matches.
    Invalid(String),
}

/// Parses the whitelist, skipping blank lines and `#` comments.
pub fn parse(text: &str) -> Vec<Rule> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Rule {
    if line.contains('#') || line.contains(' ') {
        return Rule::Invalid(line.to_owned());
    }
    if line == "*" {
        return Rule::Any;
    }
    if line.starts_with('*') {
        let labels = line.split('.').skip(1).map(str::to_ascii_lowercase).collect();
        return Rule::Domain(labels);
    }
    Rule::Exact(line.to_owned())
}

impl Rule {
    pub fn matches(&self, certname: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name == certname,
            Self::Invalid(_) => false,
            Self::Domain(labels) => {
                let name: Vec<String> = certname.split('.').map(str::to_ascii_lowercase).collect();
                name.len() >= labels.len()
                    && name.iter().rev().zip(labels.iter().rev()).all(|(a, b)| a == b)
            }
        }
    }
}

/// Whether any rule of the whitelist signs `certname`.
pub fn matches(rules: &[Rule], certname: &str) -> bool {
    rules.iter().any(|rule| rule.matches(certname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_semantics_follow_puppetserver() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything.at.all", true),
            ("*.foo.bar", "a.foo.bar", true),
            ("*.foo.bar", "x.y.foo.bar", true),
            ("*.foo.bar", "foo.bar", true),
            ("*.foo.bar", "bar", false),
            ("*.foo.bar", "a.foo.baz", false),
            ("*.foo.bar", "a.xfoo.bar", false),
            ("*.FOO.bar", "a.foo.bar", true),
            ("agent1.example.com", "agent1.example.com", true),
            ("agent1.example.com", "agent2.example.com", false),
            ("agent1.example.com", "xagent1.example.com", false),
            ("# agent1.example.com", "agent1.example.com", false),
            ("agent1.example.com # trailing", "agent1.example.com", false),
            ("agent1 example", "agent1", false),
            ("", "agent1", false),
            ("\n\n*.ok.net\r\n", "a.ok.net", true),
        ];
        for (text, name, expected) in cases {
            assert_eq!(matches(&parse(text), name), *expected, "{text:?} vs {name:?}");
        }
    }

    #[test]
    fn invalid_lines_are_kept_for_the_log() {
        assert_eq!(parse("a b\n"), vec![Rule::Invalid("a b".into())]);
    }
}

//! `inventory.txt`: one line per issued certificate, append-only.

use crate::{issue::Validity, serial::Serial, timefmt::puppet_date};

/// The inventory line puppetserver writes: `0x0003 <notBefore> <notAfter> /CN=<name>\n`.
pub fn line(serial: Serial, validity: &Validity, common_name: &str) -> String {
    format!(
        "0x{:04X} {} {} /CN={}\n",
        serial.value(),
        puppet_date(validity.not_before),
        puppet_date(validity.not_after),
        common_name
    )
}

/// An inventory entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub serial: Serial,
    pub subject: String,
    /// The validity, when its dates are in puppetserver's format.
    pub validity: Option<Validity>,
}

impl Entry {
    /// The certname of a `/CN=<name>` subject.
    pub fn common_name(&self) -> Option<&str> {
        self.subject.strip_prefix("/CN=")
    }
}

/// Reads the serial and subject of each well-formed line; a torn last line (a crash during an
/// append) and lines in unknown formats are skipped, not fatal.
pub fn parse(text: &str) -> impl Iterator<Item = Entry> + '_ {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let serial = Serial::parse_file(fields.next()?).ok()?;
        let not_before = crate::timefmt::parse_puppet_date(fields.next()?);
        let not_after = crate::timefmt::parse_puppet_date(fields.next()?);
        let validity = not_before
            .zip(not_after)
            .map(|(not_before, not_after)| Validity { not_before, not_after });
        let subject = fields.collect::<Vec<_>>().join(" ");
        subject.starts_with('/').then_some(Entry { serial, subject, validity })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    #[test]
    fn lines_round_trip_and_torn_lines_are_skipped() {
        let now = OffsetDateTime::from_unix_timestamp(1_795_536_463).expect("time");
        let validity = Validity::puppet(now, std::time::Duration::from_secs(86_400));
        let written = line(Serial::new(3), &validity, "agent1.example.com");
        assert_eq!(
            written,
            "0x0003 2026-11-23T16:07:43UTC 2026-11-25T16:07:43UTC /CN=agent1.example.com\n"
        );
        let text = format!("{written}0x0004 2026-11-23T16:07:43UTC 20");
        let entries: Vec<Entry> = parse(&text).collect();
        assert_eq!(
            entries,
            vec![Entry {
                serial: Serial::new(3),
                subject: "/CN=agent1.example.com".into(),
                validity: Some(validity)
            }]
        );
        let lower = "0x00ff 2026-11-23T16:07:43UTC 2026-11-25T16:07:43UTC /CN=x\n";
        assert_eq!(parse(lower).next().map(|e| e.serial), Some(Serial::new(255)));
    }
}

//! The inventory's domain: an [`Identity`] (one machine credential Rotor manages), its risk
//! [`Tier`], [`Status`], rotation [`Window`] and [`Lease`], and the schedule arithmetic that
//! decides when it is next due (tier interval, per-identity override, jitter, window).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, RotorError};

/// How much damage a leaked credential does; sets the default rotation interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Critical,
    High,
    #[default]
    Standard,
    Low,
}

/// Tier intervals set for this process (`ROTOR_TIER_DAYS`), if any.
static TIER_DAYS: std::sync::OnceLock<[u32; 4]> = std::sync::OnceLock::new();

/// Sets the tier intervals (days: critical, high, standard, low) for this process, once, at
/// start-up (`ROTOR_TIER_DAYS`); later calls are ignored.
pub fn configure_tier_days(days: [u32; 4]) {
    let _ = TIER_DAYS.set(days);
}

/// Parses `critical=1,high=7,standard=30,low=90` (any subset; the rest keep their defaults).
pub fn parse_tier_days(v: &str) -> std::result::Result<[u32; 4], String> {
    let mut days = [1, 7, 30, 90];
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not tier=days"))?;
        let i = match name.trim() {
            "critical" => 0,
            "high" => 1,
            "standard" => 2,
            "low" => 3,
            other => return Err(format!("unknown tier {other:?}")),
        };
        days[i] = n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .ok_or_else(|| format!("{part:?}: days must be 1 to 3650"))?;
    }
    Ok(days)
}

impl Tier {
    /// Interval in days: critical 1, high 7, standard 30, low 90, unless `ROTOR_TIER_DAYS`
    /// configured others for this process.
    pub fn default_interval_days(self) -> u32 {
        let d = TIER_DAYS.get().copied().unwrap_or([1, 7, 30, 90]);
        match self {
            Tier::Critical => d[0],
            Tier::High => d[1],
            Tier::Standard => d[2],
            Tier::Low => d[3],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Critical => "critical",
            Tier::High => "high",
            Tier::Standard => "standard",
            Tier::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Result<Tier> {
        match s {
            "critical" => Ok(Tier::Critical),
            "high" => Ok(Tier::High),
            "standard" => Ok(Tier::Standard),
            "low" => Ok(Tier::Low),
            other => Err(RotorError::InvalidPolicy(format!(
                "tier {other:?} is not critical, high, standard or low"
            ))),
        }
    }
}

/// Where an identity stands. Only `active` identities are in the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Active,
    /// Rotation suspended by a person.
    Paused,
    /// Too many failed rotations in a row: needs a person.
    Failing,
    /// No longer in use.
    Retired,
    /// Known (discovered) but not rotated by Rotor.
    Unmanaged,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Failing => "failing",
            Status::Retired => "retired",
            Status::Unmanaged => "unmanaged",
        }
    }

    pub fn parse(s: &str) -> Result<Status> {
        match s {
            "active" => Ok(Status::Active),
            "paused" => Ok(Status::Paused),
            "failing" => Ok(Status::Failing),
            "retired" => Ok(Status::Retired),
            "unmanaged" => Ok(Status::Unmanaged),
            other => Err(RotorError::InvalidPolicy(format!(
                "unknown status {other:?}"
            ))),
        }
    }
}

/// Hours of the day (UTC) in which rotations may start: `[start_hour, end_hour)`, wrapping
/// past midnight when `end_hour <= start_hour` (e.g. 22–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_hour: u8,
    pub end_hour: u8,
}

impl Window {
    pub fn validate(&self) -> Result<()> {
        if self.start_hour > 23 || self.end_hour > 24 || self.start_hour == self.end_hour {
            return Err(RotorError::InvalidPolicy(format!(
                "window {}–{} must be two different hours in 0–24",
                self.start_hour, self.end_hour
            )));
        }
        Ok(())
    }

    /// Whether a unix time falls inside the window.
    pub fn contains(&self, t: i64) -> bool {
        let h = (t.rem_euclid(86_400) / 3600) as u8;
        if self.start_hour < self.end_hour {
            h >= self.start_hour && h < self.end_hour
        } else {
            h >= self.start_hour || h < self.end_hour
        }
    }

    /// The earliest time at or after `t` inside the window.
    pub fn next_open(&self, t: i64) -> i64 {
        if self.contains(t) {
            return t;
        }
        let day = t.div_euclid(86_400) * 86_400;
        let start_today = day + i64::from(self.start_hour) * 3600;
        if start_today > t {
            start_today
        } else {
            start_today + 86_400
        }
    }
}

/// A lease on an identity: the rotation token, who holds it, until when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub token: String,
    pub holder: String,
    pub expires_at: i64,
}

/// One managed machine identity. Holds no secret material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: String,
    pub kind: String,
    /// The secret's ARN (or name, for identities registered before their secret existed).
    pub secret: String,
    pub owner: String,
    pub tier: Tier,
    /// Overrides the tier's interval.
    pub interval_days: Option<u32>,
    pub window: Option<Window>,
    pub depends_on: Vec<String>,
    pub privileges: Vec<String>,
    pub status: Status,
    pub created_at: i64,
    pub last_rotated_at: Option<i64>,
    pub next_due_at: i64,
    pub failure_count: u32,
    /// `errorType: message` of the last failure (messages never carry values).
    pub last_error: Option<String>,
    pub lease: Option<Lease>,
    /// Hash of the registration fields, to detect a changed manifest entry.
    pub registration_hash: String,
    /// The highest audit seq this identity's log has reached (an anchor outside the audit
    /// table: a log rolled back to an older head is caught against it).
    #[serde(default)]
    pub audit_seq: u64,
}

/// Identity ids: 1–128 characters of letters, digits and `/_.-`.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c))
    {
        return Err(RotorError::InvalidPolicy(format!(
            "identity id {:?} must be 1–128 letters, digits or /_.-",
            id.chars().take(140).collect::<String>()
        )));
    }
    Ok(())
}

impl Identity {
    /// The rotation interval in seconds.
    pub fn interval_secs(&self) -> i64 {
        i64::from(
            self.interval_days
                .unwrap_or_else(|| self.tier.default_interval_days()),
        ) * 86_400
    }

    /// Whether the identity may be rotated at `now` (due, active, inside its window).
    pub fn is_due(&self, now: i64) -> bool {
        self.status == Status::Active
            && self.next_due_at <= now
            && self.window.is_none_or(|w| w.contains(now))
    }
}

/// Deterministic jitter in `[0, max)` seconds for an identity and a moment, so identities
/// registered or rotated together spread out, and a re-run computes the same time.
pub fn jitter(id: &str, salt: i64, max: i64) -> i64 {
    if max <= 0 {
        return 0;
    }
    let d = Sha256::new()
        .chain_update(id.as_bytes())
        .chain_update(salt.to_le_bytes())
        .finalize();
    let x = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (x % max as u64) as i64
}

/// When a newly registered identity is first due: now, less up to five minutes of jitter (due at
/// once, but not all at the same second), moved into its window.
pub fn first_due(identity: &Identity, now: i64) -> i64 {
    let t = now - jitter(&identity.id, 0, 300);
    match identity.window {
        Some(w) if !w.contains(now) => w.next_open(now) + jitter(&identity.id, 1, 300).min(3599),
        _ => t,
    }
}

/// When an identity rotated at `rotated_at` is next due: its interval less up to 10% jitter
/// (at most six hours), moved into its window.
pub fn next_due(identity: &Identity, rotated_at: i64) -> i64 {
    let interval = identity.interval_secs();
    let t = rotated_at + interval - jitter(&identity.id, rotated_at, (interval / 10).min(6 * 3600));
    match identity.window {
        Some(w) => w.next_open(t),
        None => t,
    }
}

/// When to retry after the `failures`-th failure in a row: 5 minutes doubling, capped at the
/// interval.
pub fn backoff_due(identity: &Identity, now: i64, failures: u32) -> i64 {
    let delay = (300_i64 << failures.saturating_sub(1).min(20)).min(identity.interval_secs());
    let t = now + delay;
    match identity.window {
        Some(w) => w.next_open(t),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn identity(id: &str) -> Identity {
        Identity {
            id: id.into(),
            kind: "generic".into(),
            secret: format!("secret/{id}"),
            owner: "team".into(),
            tier: Tier::Standard,
            interval_days: None,
            window: None,
            depends_on: vec![],
            privileges: vec![],
            status: Status::Active,
            created_at: 0,
            last_rotated_at: None,
            next_due_at: 0,
            failure_count: 0,
            last_error: None,
            lease: None,
            registration_hash: String::new(),
            audit_seq: 0,
        }
    }

    #[test]
    fn tier_intervals_and_overrides() {
        let mut i = identity("a");
        assert_eq!(i.interval_secs(), 30 * 86_400);
        i.tier = Tier::Critical;
        assert_eq!(i.interval_secs(), 86_400);
        i.interval_days = Some(3);
        assert_eq!(i.interval_secs(), 3 * 86_400);
    }

    #[test]
    fn windows_wrap_midnight() {
        let w = Window {
            start_hour: 22,
            end_hour: 4,
        };
        assert!(w.contains(23 * 3600));
        assert!(w.contains(86_400 + 3600));
        assert!(!w.contains(12 * 3600));
        assert_eq!(w.next_open(12 * 3600), 22 * 3600);
        let d = Window {
            start_hour: 2,
            end_hour: 5,
        };
        assert_eq!(d.next_open(6 * 3600), 86_400 + 2 * 3600);
        assert_eq!(d.next_open(3 * 3600), 3 * 3600);
    }

    #[test]
    fn next_due_spreads_identities_rotated_together() {
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..100 {
            let i = identity(&format!("id-{n}"));
            let t = next_due(&i, 1_000_000);
            assert!(t <= 1_000_000 + i.interval_secs());
            assert!(t >= 1_000_000 + i.interval_secs() - 6 * 3600);
            seen.insert(t);
        }
        assert!(
            seen.len() > 95,
            "jitter must spread due times: {}",
            seen.len()
        );
    }

    #[test]
    fn due_respects_status_and_window() {
        let mut i = identity("w");
        i.next_due_at = 100;
        assert!(i.is_due(100));
        i.window = Some(Window {
            start_hour: 2,
            end_hour: 3,
        });
        assert!(!i.is_due(12 * 3600));
        assert!(i.is_due(2 * 3600 + 5));
        i.status = Status::Paused;
        assert!(!i.is_due(2 * 3600 + 5));
        let mut w = identity("w2");
        w.window = Some(Window {
            start_hour: 2,
            end_hour: 3,
        });
        let t = next_due(&w, 12 * 3600);
        assert!(w.window.unwrap().contains(t));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let i = identity("b");
        assert_eq!(backoff_due(&i, 0, 1), 300);
        assert_eq!(backoff_due(&i, 0, 2), 600);
        assert_eq!(backoff_due(&i, 0, 3), 1200);
        assert_eq!(backoff_due(&i, 0, 40), i.interval_secs());
    }
}

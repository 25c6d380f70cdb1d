//! Pacing: token buckets per sender number (the provider's throughput, e.g. WhatsApp's 80
//! messages/s) and per recipient (the pair rate limit, about one message per 6 s with short
//! bursts), so Herald does not earn throttling errors it could have avoided.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::TimeDelta;

use crate::clock::Timestamp;
use crate::ids::SubjectId;

/// Recipients tracked before full (idle) buckets are forgotten.
const MAX_TRACKED_RECIPIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Timestamp,
}

impl Bucket {
    fn full(capacity: f64, now: Timestamp) -> Self {
        Self {
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, capacity: f64, per_token: TimeDelta, now: Timestamp) {
        let elapsed = (now - self.updated)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0) as f64;
        let per = per_token.num_microseconds().unwrap_or(1).max(1) as f64;
        self.tokens = (self.tokens + elapsed / per).min(capacity);
        self.updated = now;
    }

    /// How long until one token is there (zero if it is).
    fn wait(&self, per_token: TimeDelta) -> TimeDelta {
        if self.tokens >= 1.0 {
            return TimeDelta::zero();
        }
        let per = per_token.num_microseconds().unwrap_or(1).max(1) as f64;
        TimeDelta::microseconds(((1.0 - self.tokens) * per).ceil() as i64)
    }
}

/// Why a message may not go yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paced {
    /// The recipient had enough for now: try this message again after this long.
    Recipient(TimeDelta),
    /// The sender number is at its pace: wait this long, then try again.
    Sender(TimeDelta),
}

#[derive(Debug)]
pub struct Pacer {
    sender: Mutex<Bucket>,
    sender_burst: f64,
    sender_per_token: TimeDelta,
    recipients: Mutex<HashMap<SubjectId, Bucket>>,
    recipient_burst: f64,
    recipient_per_token: TimeDelta,
}

impl Pacer {
    /// `per_second`: the sender's pace (also its burst); `recipient_burst` messages per
    /// recipient at once, then one per `recipient_refill`.
    pub fn new(
        per_second: u32,
        recipient_burst: u32,
        recipient_refill: TimeDelta,
        now: Timestamp,
    ) -> Self {
        let sender_burst = f64::from(per_second.max(1));
        Self {
            sender: Mutex::new(Bucket::full(sender_burst, now)),
            sender_burst,
            sender_per_token: TimeDelta::microseconds(1_000_000 / i64::from(per_second.max(1))),
            recipients: Mutex::new(HashMap::new()),
            recipient_burst: f64::from(recipient_burst.max(1)),
            recipient_per_token: recipient_refill.max(TimeDelta::milliseconds(1)),
        }
    }

    /// Takes one token from the recipient's and the sender's bucket, or neither.
    pub fn admit(&self, recipient: &SubjectId, now: Timestamp) -> Result<(), Paced> {
        let mut recipients = self.recipients.lock().unwrap_or_else(|e| e.into_inner());
        let mut sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let mut own = recipients
            .get(recipient)
            .copied()
            .unwrap_or_else(|| Bucket::full(self.recipient_burst, now));
        own.refill(self.recipient_burst, self.recipient_per_token, now);
        let recipient_wait = own.wait(self.recipient_per_token);
        if recipient_wait > TimeDelta::zero() {
            recipients.insert(recipient.clone(), own);
            return Err(Paced::Recipient(recipient_wait));
        }
        sender.refill(self.sender_burst, self.sender_per_token, now);
        let sender_wait = sender.wait(self.sender_per_token);
        if sender_wait > TimeDelta::zero() {
            return Err(Paced::Sender(sender_wait));
        }
        sender.tokens -= 1.0;
        own.tokens -= 1.0;
        if recipients.len() >= MAX_TRACKED_RECIPIENTS {
            let (burst, per) = (self.recipient_burst, self.recipient_per_token);
            recipients.retain(|_, bucket| {
                let mut refilled = *bucket;
                refilled.refill(burst, per, now);
                refilled.tokens < burst
            });
        }
        recipients.insert(recipient.clone(), own);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(ms: i64) -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn a_recipient_gets_a_burst_then_one_per_refill() {
        let pacer = Pacer::new(1000, 3, TimeDelta::seconds(6), t(0));
        let anna = SubjectId::generate().unwrap();
        for _ in 0..3 {
            assert_eq!(pacer.admit(&anna, t(0)), Ok(()));
        }
        assert_eq!(
            pacer.admit(&anna, t(0)),
            Err(Paced::Recipient(TimeDelta::seconds(6)))
        );
        assert_eq!(
            pacer.admit(&anna, t(3000)),
            Err(Paced::Recipient(TimeDelta::seconds(3)))
        );
        assert_eq!(pacer.admit(&anna, t(6000)), Ok(()));
        // Others are not held up by Anna.
        let ben = SubjectId::generate().unwrap();
        assert_eq!(pacer.admit(&ben, t(6000)), Ok(()));
    }

    #[test]
    fn the_sender_keeps_its_pace() {
        let pacer = Pacer::new(80, 10, TimeDelta::seconds(6), t(0));
        let mut admitted = 0;
        for _ in 0..200 {
            let someone = SubjectId::generate().unwrap();
            match pacer.admit(&someone, t(0)) {
                Ok(()) => admitted += 1,
                Err(Paced::Sender(wait)) => assert!(wait <= TimeDelta::milliseconds(13)),
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(admitted, 80, "one second's worth at once");
        // A second later, another second's worth.
        let later: usize = (0..200)
            .filter(|_| {
                pacer
                    .admit(&SubjectId::generate().unwrap(), t(1000))
                    .is_ok()
            })
            .count();
        assert_eq!(later, 80);
    }

    #[test]
    fn a_refused_sender_token_leaves_the_recipient_untouched() {
        let pacer = Pacer::new(1, 1, TimeDelta::seconds(6), t(0));
        let a = SubjectId::generate().unwrap();
        let b = SubjectId::generate().unwrap();
        assert_eq!(pacer.admit(&a, t(0)), Ok(()));
        assert!(matches!(pacer.admit(&b, t(0)), Err(Paced::Sender(_))));
        // b's own allowance was not spent by the refusal.
        assert_eq!(pacer.admit(&b, t(1000)), Ok(()));
    }
}

//! Admission control and the per-request metrics record (contract/README.md, "Load, slow
//! clients and shutdown").
//!
//! A /predict/ request is pending from the moment its handler starts (the headers are read)
//! until it answers or its client leaves. At most MAX_PENDING_REQUESTS x WORKERS are pending
//! at a time: one more gets 503 at once instead of a place in an unbounded queue, which
//! bounds both the queue's wait and the memory held by bodies. Under a flood the 503s
//! themselves are paced (RefusalPacer), as in the Python services.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

use crate::metrics::Metrics;

/// The status counted for a client that left before its answer (nginx's convention).
const CLIENT_CLOSED_REQUEST: u16 = 499;

pub struct Admission {
    pending: AtomicUsize,
    limit: usize,
}

/// One admitted request; dropping it frees its place.
pub struct Permit<'a>(&'a Admission);

impl Admission {
    pub fn new(limit: usize) -> Self {
        Self {
            pending: AtomicUsize::new(0),
            limit,
        }
    }

    /// A place for one more request, or None when `limit` are already pending.
    pub fn admit(&self) -> Option<Permit<'_>> {
        let admitted = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < self.limit).then_some(pending + 1)
            })
            .is_ok();
        // NOTE: `then`, not `then_some`: a Permit built and dropped would free a place.
        admitted.then(|| Permit(self))
    }

    /// Whether a request arriving now would be admitted (no place is taken).
    pub fn has_room(&self) -> bool {
        self.pending.load(Ordering::Acquire) < self.limit
    }

    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Spaces the service's 503s at most `rate` a second (REFUSALS_PER_SECOND x WORKERS).
/// Refused clients retry as soon as they are answered, and each refusal costs the service
/// its request and body: unpaced, a few hundred retrying clients take CPU from the admitted
/// requests. A refusal waits for its turn instead, its body unread, and costs nothing while
/// it waits; one whose turn is more than MAX_REFUSAL_WAIT away is answered at once, so the
/// waiting stay bounded. Below `rate` nothing waits.
pub struct RefusalPacer {
    interval: Option<Duration>,
    next_turn: Mutex<Option<Instant>>,
}

pub const MAX_REFUSAL_WAIT: Duration = Duration::from_secs(2);

impl RefusalPacer {
    /// `rate` refusals a second; 0: every refusal at once.
    pub fn new(rate: u32) -> Self {
        Self {
            interval: (rate > 0).then(|| Duration::from_secs(1) / rate),
            next_turn: Mutex::new(None),
        }
    }

    /// How long the refusal arriving at `now` waits before it is answered (its turn taken),
    /// or zero: at once.
    pub fn delay(&self, now: Instant) -> Duration {
        let Some(interval) = self.interval else {
            return Duration::ZERO;
        };
        // A poisoned lock only means another refusal panicked; the time in it is still good.
        let mut next_turn = self.next_turn.lock().unwrap_or_else(|poison| poison.into_inner());
        let turn = next_turn.map_or(now, |next| next.max(now));
        let wait = turn - now;
        if wait > MAX_REFUSAL_WAIT {
            return Duration::ZERO;
        }
        *next_turn = Some(turn + interval);
        wait
    }
}

/// Counts one /predict/ request in `predict_requests_total` and its latency, exactly once:
/// with the status it answered, or 499 when it never did because the client left (actix
/// drops the handler when the connection closes; this record is dropped with it).
pub struct RequestRecord<'a> {
    metrics: &'a Metrics,
    pub started: Instant,
    counted: bool,
}

impl<'a> RequestRecord<'a> {
    pub fn start(metrics: &'a Metrics) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            counted: false,
        }
    }

    pub fn finish(mut self, response: HttpResponse) -> HttpResponse {
        self.count(response.status().as_u16());
        response
    }

    /// The connection closed mid-body: nobody reads this answer.
    pub fn client_gone(mut self) -> HttpResponse {
        self.count(CLIENT_CLOSED_REQUEST);
        HttpResponse::new(StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST))
    }

    fn count(&mut self, status: u16) {
        self.counted = true;
        self.metrics
            .requests
            .with_label_values(&[status.to_string().as_str()])
            .inc();
        self.metrics.latency.observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.count(CLIENT_CLOSED_REQUEST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let admission = Admission::new(2);
        let first = admission.admit().unwrap();
        let _second = admission.admit().unwrap();
        assert!(admission.admit().is_none());
        drop(first);
        assert!(admission.admit().is_some());
        assert_eq!(admission.pending(), 1);
    }

    #[test]
    fn refusals_take_turns_up_to_the_longest_wait() {
        let pacer = RefusalPacer::new(100);
        let now = Instant::now();
        let delays: Vec<Duration> = (0..3).map(|_| pacer.delay(now)).collect();
        let ms = Duration::from_millis;
        assert_eq!(delays, [ms(0), ms(10), ms(20)]);
        // Two seconds of turns are taken; the next one is answered at once, untaken.
        for _ in 3..=200 {
            pacer.delay(now);
        }
        assert_eq!(pacer.delay(now), Duration::ZERO);
        // Once the turns are past, a refusal waits no more.
        assert_eq!(pacer.delay(now + Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(pacer.delay(now + Duration::from_secs(3)), ms(10));
    }

    #[test]
    fn no_pacing_at_rate_zero() {
        let pacer = RefusalPacer::new(0);
        let now = Instant::now();
        assert!((0..1000).all(|_| pacer.delay(now) == Duration::ZERO));
    }

    #[test]
    fn a_dropped_request_counts_as_499() {
        let metrics = Metrics::new();
        drop(RequestRecord::start(&metrics));
        RequestRecord::start(&metrics).finish(HttpResponse::Ok().finish());
        let text = String::from_utf8(metrics.exposition()).unwrap();
        assert!(
            text.contains("predict_requests_total{status=\"499\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("predict_requests_total{status=\"200\"} 1"),
            "{text}"
        );
    }
}

//! Decoding and inference off the HTTP threads (contract/README.md, "Liveness"): WORKERS
//! dedicated threads, each owning its own ONNX Runtime session and image decoder, take jobs
//! from one queue, so a saturated service still answers `GET /` at once.
//!
//! One handoff per request: the body moves into the queue (no copy) and the answer comes
//! back on a oneshot channel. The queue is unbounded on purpose: admission
//! (MAX_PENDING_REQUESTS, in http.rs) bounds how many jobs can exist at all.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::decode::{ImageDecoder, ImageLimits};
use crate::errors::{ErrorType, ServiceError};
use crate::http::image_from_json;
use crate::predictor::Predictor;

/// What a request hands the inference threads: its body, as read.
pub struct Job {
    pub body: Vec<u8>,
    /// `{"image": "<base64>"}` rather than the image bytes themselves.
    pub json: bool,
    pub reply: oneshot::Sender<Result<Scored, ServiceError>>,
}

/// Probabilities in label order, and where the time went.
pub struct Scored {
    pub probabilities: Vec<f32>,
    /// JSON and base64 (the body's reading is timed by the handler).
    pub parse: Duration,
    pub decode: Duration,
    /// The service's own resize of the crop (fixed graph); next to nothing otherwise.
    pub preprocess: Duration,
    /// The graph's run.
    pub inference: Duration,
}

/// A handle on the queue; clones share it.
#[derive(Clone)]
pub struct InferencePool {
    queue: Sender<Job>,
}

/// The threads of a started pool; they end once every [`InferencePool`] handle is gone and
/// the queue is empty.
pub struct InferenceThreads(Vec<JoinHandle<()>>);

impl InferenceThreads {
    pub fn join(self) {
        for thread in self.0 {
            let _ = thread.join();
        }
    }
}

impl InferencePool {
    /// One thread per predictor (each already warmed up), named for `top` and the logs.
    /// `jpeg_dct_scaling`: JPEG_DCT_SCALING, for each thread's decoder (which scales for its
    /// predictor's model sizes).
    pub fn start(
        predictors: Vec<Predictor>,
        limits: ImageLimits,
        jpeg_dct_scaling: bool,
    ) -> Result<(Self, InferenceThreads), String> {
        let (queue, jobs) = channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        let mut threads = Vec::with_capacity(predictors.len());
        for (index, predictor) in predictors.into_iter().enumerate() {
            let decoder = ImageDecoder::new(jpeg_dct_scaling.then_some(predictor.geometry()))?;
            let jobs = jobs.clone();
            let thread = std::thread::Builder::new()
                .name(format!("inference-{index}"))
                .spawn(move || serve_jobs(&jobs, predictor, decoder, limits))
                .map_err(|e| format!("cannot start an inference thread ({e})"))?;
            threads.push(thread);
        }
        Ok((Self { queue }, InferenceThreads(threads)))
    }

    /// Queue a job; its answer arrives on the job's `reply`.
    pub fn submit(&self, job: Job) -> Result<(), ServiceError> {
        self.queue.send(job).map_err(|_| {
            tracing::error!("every inference thread has stopped");
            ServiceError::new(ErrorType::Internal, "internal error")
        })
    }
}

/// The inference threads' niceness (Linux schedules threads by it), as in the Python
/// services: when HTTP and inference want the same core, HTTP goes first, so health checks
/// and 503s for the excess are answered at once under a flood; inference has the cores
/// whenever HTTP is idle.
#[cfg(target_os = "linux")]
const INFERENCE_NICENESS: libc::c_int = 5;

#[cfg(target_os = "linux")]
fn yield_to_http() {
    // SAFETY: plain syscalls on the calling thread; a refusal leaves the priority as it was.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, INFERENCE_NICENESS);
    }
}

/// Elsewhere a no-op: only Linux schedules threads by a niceness of their own (macOS has no
/// gettid, and its setpriority(PRIO_PROCESS) takes a process: HTTP would be reniced too).
#[cfg(not(target_os = "linux"))]
fn yield_to_http() {}

fn serve_jobs(
    jobs: &Mutex<Receiver<Job>>,
    mut predictor: Predictor,
    mut decoder: ImageDecoder,
    limits: ImageLimits,
) {
    yield_to_http();
    loop {
        // NOTE: the lock is held while waiting, so idle threads queue on the mutex and the
        // holder on the channel: one job wakes one thread.
        let job = jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        let Ok(job) = job else {
            return; // the service is stopping and the queue is drained
        };
        if job.reply.is_closed() {
            continue; // the client left while its request waited: drop the work
        }
        // A panic here (a decoder bug on a hostile image) answers 500 and keeps the thread.
        let result = catch_unwind(AssertUnwindSafe(|| {
            score(&job.body, job.json, &mut predictor, &mut decoder, &limits)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("inference panicked; the request gets 500");
            Err(ServiceError::new(ErrorType::Internal, "internal error"))
        });
        drop(job.body);
        let _ = job.reply.send(result); // the client may have left meanwhile; nothing to do
    }
}

fn score(
    body: &[u8],
    json: bool,
    predictor: &mut Predictor,
    decoder: &mut ImageDecoder,
    limits: &ImageLimits,
) -> Result<Scored, ServiceError> {
    let started = Instant::now();
    let from_base64;
    let image: &[u8] = if json {
        from_base64 = image_from_json(body)?;
        &from_base64
    } else {
        body
    };
    let parsed = Instant::now();
    let pixels = decoder.decode(image, limits)?;
    let decoded = Instant::now();
    let failed = |stage: &str, e: String| {
        tracing::error!("{stage} failed: {e}");
        ServiceError::new(ErrorType::Internal, "internal error")
    };
    let input = predictor
        .preprocess(std::slice::from_ref(&pixels))
        .map_err(|e| failed("preprocessing", e))?;
    let preprocessed = Instant::now();
    let probabilities = predictor
        .run(input)
        .and_then(|batch| {
            batch
                .into_iter()
                .next()
                .ok_or_else(|| "no output for the image".to_owned())
        })
        .map_err(|e| failed("inference", e))?;
    Ok(Scored {
        probabilities,
        parse: parsed - started,
        decode: decoded - parsed,
        preprocess: preprocessed - decoded,
        inference: preprocessed.elapsed(),
    })
}

//! The ONNX Runtime backend (`backend = "ort"`, cargo feature `ort`, on by default in glibc
//! builds, off in the static musl binary). The shared library is loaded at run time
//! (`load-dynamic`) from `infer.ort_library`, else `$ORT_DYLIB_PATH`, else
//! `libonnxruntime.so` on the library path: the one inside the PyPI `onnxruntime` wheel
//! (`site-packages/onnxruntime/capi/`) or a system install.
//!
//! A model's bytes are read and checked once per process; ONNX Runtime sessions need `&mut`
//! to run, so each worker checks one out of a per-model pool (at most one session per worker
//! is ever built) and gives it back when its item ends.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;
use ort::value::Tensor;

/// Where the ONNX Runtime library is looked for: `configured`, else `$ORT_DYLIB_PATH`, else
/// `libonnxruntime.so` (the dynamic loader's search path).
pub fn library(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("libonnxruntime.so"), PathBuf::from)
}

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads the library once per process.
fn environment(lib: &std::path::Path) -> Result<&'static ort::environment::Environment, String> {
    let got = ENV.get_or_init(|| {
        let builder = ort::init_from(lib).map_err(|e| {
            format!(
                "cannot load ONNX Runtime from {} ({e}); install the PyPI wheel `onnxruntime` \
                 and point infer.ort_library or ORT_DYLIB_PATH at \
                 site-packages/onnxruntime/capi/libonnxruntime.so.*",
                lib.display()
            )
        })?;
        builder
            .with_name("klio-edge")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    });
    got.as_ref().map_err(Clone::clone)
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// CPU.
    Cpu,
    /// CUDA (falls back to CPU, with a warning, where ONNX Runtime has no CUDA support or
    /// the GPU cannot be used).
    Cuda,
}

/// One model in ONNX Runtime.
pub struct OrtModel {
    env: &'static ort::environment::Environment,
    name: String,
    bytes: Vec<u8>,
    threads: usize,
    device: Device,
    pool: Mutex<Vec<Session>>,
    inputs: Vec<String>,
}

impl OrtModel {
    /// Loads the library (once) and builds a first session, which checks the model.
    ///
    /// # Errors
    /// No library, or ONNX Runtime refuses the model.
    pub fn load(
        name: &str,
        bytes: Vec<u8>,
        threads: usize,
        device: Device,
        lib: &std::path::Path,
    ) -> Result<OrtModel, String> {
        let env = environment(lib)?;
        let mut m = OrtModel {
            env,
            name: name.to_string(),
            bytes,
            threads: threads.max(1),
            device,
            pool: Mutex::new(Vec::new()),
            inputs: Vec::new(),
        };
        let first = m.build(true)?;
        m.inputs = first
            .inputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        m.pool
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(first);
        Ok(m)
    }

    fn build(&self, announce: bool) -> Result<Session, String> {
        let err = |e: &dyn std::fmt::Display| format!("model {:?}: ONNX Runtime: {e}", self.name);
        let mut b = Session::builder(self.env)
            .map_err(|e| err(&e))?
            .with_intra_threads(self.threads)
            .map_err(|e| err(&e))?
            .with_inter_threads(1)
            .map_err(|e| err(&e))?;
        if self.device == Device::Cuda {
            use ort::ep::ExecutionProvider;
            // Full f32: TensorFloat-32 matmuls and convolutions (ONNX Runtime's CUDA default)
            // moved Silero VAD's probabilities by up to 0.017 from the CPU's.
            let cuda = ort::ep::CUDA::default().with_tf32(false);
            match ort::ep::CUDA::is_available() {
                Ok(true) => match cuda.register(&mut b) {
                    Ok(()) => {
                        if announce {
                            tracing::info!("model {:?}: running on CUDA", self.name);
                        }
                    }
                    Err(e) => {
                        if announce {
                            tracing::warn!(
                                "model {:?}: CUDA cannot be used ({e}); running on CPU",
                                self.name
                            );
                        }
                    }
                },
                _ => {
                    if announce {
                        tracing::warn!(
                            "model {:?}: this ONNX Runtime has no CUDA support (install \
                             onnxruntime-gpu); running on CPU",
                            self.name
                        );
                    }
                }
            }
        }
        b.commit_from_memory(&self.bytes).map_err(|e| err(&e))
    }

    /// A session for one worker (from the pool, or a new one).
    ///
    /// # Errors
    /// A new session cannot be built.
    pub fn checkout(&self) -> Result<Session, String> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.build(false),
        }
    }

    /// Returns a session to the pool.
    pub fn give_back(&self, s: Session) {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    /// Runs one call: `input` in `shape`, then `state` (with its shape) if any. Returns the
    /// first output (flattened) and, with a state, the second output.
    ///
    /// # Errors
    /// The runtime's message.
    pub fn run(
        &self,
        s: &mut Session,
        input: &[f32],
        shape: &[usize],
        state: Option<(&[usize], &[f32])>,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>), String> {
        let e = |e: ort::Error| e.to_string();
        let x = Tensor::from_array((shape.to_vec(), input.to_vec())).map_err(e)?;
        let mut feed: Vec<(String, ort::session::SessionInputValue<'_>)> =
            vec![(self.inputs.first().cloned().unwrap_or_default(), x.into())];
        if let Some((shape, values)) = state {
            let st = Tensor::from_array((shape.to_vec(), values.to_vec())).map_err(e)?;
            let name = self.inputs.get(1).cloned().ok_or_else(|| {
                "state is configured but the model has only one input".to_string()
            })?;
            feed.push((name, st.into()));
        }
        let out = s.run(feed).map_err(e)?;
        let (_, v) = out[0].try_extract_tensor::<f32>().map_err(e)?;
        let first = v.to_vec();
        let next = if state.is_some() {
            if out.len() < 2 {
                return Err("state is configured but the model has no second output".into());
            }
            let (_, st) = out[1].try_extract_tensor::<f32>().map_err(e)?;
            Some(st.to_vec())
        } else {
            None
        };
        Ok((first, next))
    }
}

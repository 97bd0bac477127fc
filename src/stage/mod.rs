//! The stages an item goes through, in order: [`fetch`] (stat, download, hash), [`decode`]
//! (container, codec, mixdown, resampling), [`features`] (klio-dsp's kernels), [`infer`]
//! (`[[model]]`s on tract or ONNX Runtime), [`exec`] (`[[exec]]` programs), [`sink`] (staging
//! and committing outputs). Each owns its config type and its error (whose `kind()` is an
//! [`ErrorKind`](crate::pipeline::ErrorKind)) and knows nothing of the whole
//! [`Config`](crate::config::Config); [`crate::pipeline`] drives them.

pub mod decode;
pub mod exec;
pub mod features;
pub mod fetch;
pub mod infer;
pub mod sink;

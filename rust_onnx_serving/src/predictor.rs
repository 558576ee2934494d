//! Running the ONNX graph, which holds the preprocessing, on decoded uint8 RGB pixels.
//!
//! The predictor contract is batch-shaped, as TEI's `predict(batch)` or LitServe's
//! decode → batch → predict → unbatch: each request decodes its own image, and
//! [`Predictor::infer`] takes a slice of decoded images and returns one probability vector
//! per image. A single request is a batch of one.

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;

use crate::decode::RgbPixels;

/// One input or output of a graph, as metadata.json's "graphs" entry names it (its dtype and
/// shape there are descriptive; the session's own types are checked in [`Predictor::new`]).
#[derive(Debug, Clone, Deserialize)]
pub struct TensorSpec {
    pub name: String,
}

/// metadata.json's `graphs["<onnx file>"]`: the tensor the predictor feeds and the one it
/// reads back (the probabilities, in label order).
#[derive(Debug, Clone, Deserialize)]
pub struct GraphSpec {
    pub input: TensorSpec,
    pub output: TensorSpec,
}

/// One session; the caller gives each worker its own (see main.rs).
pub fn load_session(
    environment: &Environment,
    model: &[u8],
    intra_op_threads: usize,
    inter_op_threads: usize,
) -> Result<Session, String> {
    // The saved graph is optimised offline and portable; the layout level (NCHWc for this
    // machine's vector width) can only be chosen here, at load time.
    let text = |e: ort::Error<ort::session::builder::SessionBuilder>| e.to_string();
    Session::builder(environment)
        .map_err(|e| e.to_string())?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(text)?
        .with_intra_threads(intra_op_threads)
        .map_err(text)?
        .with_inter_threads(inter_op_threads)
        .map_err(text)?
        .commit_from_memory(model)
        .map_err(|e| e.to_string())
}

/// A session and the names of its input and output. `Session::run` takes `&mut self`, so
/// each worker owns one (see main.rs).
pub struct Predictor {
    session: Session,
    input: String,
    output: String,
}

impl Predictor {
    /// Checks the session against its metadata entry: the named input must be the
    /// any-size image this service feeds (uint8 [height, width, 3]), the named output a
    /// float32 tensor. A mismatch is a startup error, not a 500 on every request.
    pub fn new(session: Session, graph: &GraphSpec) -> Result<Self, String> {
        let (input, output) = (&graph.input.name, &graph.output.name);
        let input_type = session
            .inputs()
            .iter()
            .find(|i| i.name() == input.as_str())
            .map(|i| i.dtype())
            .ok_or_else(|| format!("the graph has no input {input:?}, which metadata.json names"))?;
        let any_size_rgb = input_type.tensor_type() == Some(TensorElementType::Uint8)
            && input_type
                .tensor_shape()
                .is_some_and(|shape| matches!(**shape, [h, w, 3] if h < 0 && w < 0));
        if !any_size_rgb {
            return Err(format!(
                "input {input:?} is {input_type}; this service feeds one uint8 [height, width, 3] image per run"
            ));
        }
        let output_type = session
            .outputs()
            .iter()
            .find(|o| o.name() == output.as_str())
            .map(|o| o.dtype())
            .ok_or_else(|| format!("the graph has no output {output:?}, which metadata.json names"))?;
        if output_type.tensor_type() != Some(TensorElementType::Float32) {
            return Err(format!(
                "output {output:?} is {output_type}, not float32 probabilities"
            ));
        }
        Ok(Self {
            input: input.clone(),
            output: output.clone(),
            session,
        })
    }

    /// Probabilities in label order, one vector per image, in the order given. The graph
    /// takes one any-size image per run, so the batch runs image by image.
    pub fn infer(&mut self, images: &[RgbPixels]) -> Result<Vec<Vec<f32>>, String> {
        images.iter().map(|image| self.infer_one(image)).collect()
    }

    /// One image; the pixels go in without a copy.
    fn infer_one(&mut self, image: &RgbPixels) -> Result<Vec<f32>, String> {
        let shape = [image.height as usize, image.width as usize, 3];
        let tensor = TensorRef::from_array_view((shape, image.data.as_slice())).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let (_, probabilities) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(probabilities.to_vec())
    }

    /// One inference on a built-in image before the service listens: the output must hold
    /// one finite score per label of metadata.json, or the service would answer with the
    /// wrong labels (or none) on every request.
    pub fn warm_up(&mut self, labels: &[String]) -> Result<(), String> {
        let scores = self
            .infer(std::slice::from_ref(&warm_up_image()))?
            .pop()
            .unwrap_or_default();
        if scores.len() != labels.len() {
            return Err(format!(
                "model output has {} scores, metadata.json lists {} labels",
                scores.len(),
                labels.len()
            ));
        }
        if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
            return Err(format!(
                "model output on the warm-up image is not finite ({bad}): the weights are broken"
            ));
        }
        Ok(())
    }
}

/// A 320x240 colour gradient, made in code: no file to ship, and every pixel value path of
/// the graph (resize, crop, normalisation) runs once.
fn warm_up_image() -> RgbPixels {
    let (width, height) = (320u32, 240u32);
    let data = (0..height)
        .flat_map(|y| (0..width).flat_map(move |x| [(x * 255 / width) as u8, (y * 255 / height) as u8, 128]))
        .collect();
    RgbPixels { width, height, data }
}

//! Running the ONNX graph on decoded uint8 RGB pixels. Two kinds of graph, told apart by
//! their input (metadata.json's "graphs" entry names it): the any-size graph takes one image
//! as decoded and resizes, crops and normalises inside; the fixed graph takes a batch of
//! crops of metadata.json's `center_crop` (geometry.rs), which this service resizes itself
//! (preprocess.rs), and normalises inside.
//!
//! The predictor contract is batch-shaped, as TEI's `predict(batch)` or LitServe's
//! decode → batch → predict → unbatch: each request decodes its own image, and
//! [`Predictor::infer`] takes a slice of decoded images and returns one probability vector
//! per image. A single request is a batch of one. [`Predictor::preprocess`] and
//! [`Predictor::run`] are its two halves, for the stage metrics.

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;

use crate::decode::RgbPixels;
use crate::geometry::Geometry;
use crate::preprocess::{CropResizer, ResizerKind};

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

/// Who resizes: the graph, or this service. Read from the graph's input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    /// uint8 `[height, width, 3]`, one image per run; resize and crop in the graph.
    AnySize,
    /// uint8 `[batch, crop, crop, 3]`, a batch per run; the service resizes the crops.
    Fixed,
}

impl GraphKind {
    /// The input shape's kind (dynamic dimensions are negative), if it is one this service
    /// feeds crops of side `crop` to.
    fn of_input(shape: &[i64], crop: u32) -> Option<Self> {
        let crop = i64::from(crop);
        match *shape {
            [height, width, 3] if height < 0 && width < 0 => Some(Self::AnySize),
            [batch, h, w, 3] if batch < 0 && h == crop && w == crop => Some(Self::Fixed),
            _ => None,
        }
    }

    /// As /info says it.
    pub fn name(self) -> &'static str {
        match self {
            Self::AnySize => "any-size",
            Self::Fixed => "fixed",
        }
    }
}

/// A batch in the graph's input form: the decoded images themselves (any-size graph), or
/// their crops stacked as `[count, crop, crop, 3]` (fixed graph).
pub enum GraphInput<'a> {
    Images(&'a [RgbPixels]),
    Crops { count: usize, pixels: Vec<u8> },
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

/// A session, the names of its input and output, its kind, and the model's sizes.
/// `Session::run` takes `&mut self`, so each worker owns one (see main.rs), with its own
/// resizer.
pub struct Predictor {
    session: Session,
    input: String,
    output: String,
    kind: GraphKind,
    geometry: Geometry,
    resizer: CropResizer,
}

impl Predictor {
    /// Checks the session against its metadata entry: the named input must be one this
    /// service feeds (uint8 `[height, width, 3]`, or `[batch, crop, crop, 3]` with
    /// `geometry`'s crop), the named output a float32 tensor. A mismatch is a startup error,
    /// not a 500 on every request. `resizer` resizes the fixed graph's crops.
    pub fn new(
        session: Session,
        graph: &GraphSpec,
        geometry: Geometry,
        resizer: ResizerKind,
    ) -> Result<Self, String> {
        let crop = geometry.crop;
        let (input, output) = (&graph.input.name, &graph.output.name);
        let input_type = session
            .inputs()
            .iter()
            .find(|i| i.name() == input.as_str())
            .map(|i| i.dtype())
            .ok_or_else(|| format!("the graph has no input {input:?}, which metadata.json names"))?;
        let kind = input_type
            .tensor_shape()
            .filter(|_| input_type.tensor_type() == Some(TensorElementType::Uint8))
            .and_then(|shape| GraphKind::of_input(shape, crop))
            .ok_or_else(|| {
                format!(
                    "input {input:?} is {input_type}; this service feeds uint8 [height, width, 3] (the \
                     any-size graph) or uint8 [batch, {crop}, {crop}, 3] (the fixed graph, for \
                     metadata.json's center_crop of {crop})"
                )
            })?;
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
            kind,
            geometry,
            resizer: CropResizer::new(resizer),
        })
    }

    pub fn kind(&self) -> GraphKind {
        self.kind
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Probabilities in label order, one vector per image, in the order given.
    pub fn infer(&mut self, images: &[RgbPixels]) -> Result<Vec<Vec<f32>>, String> {
        let input = self.preprocess(images)?;
        self.run(input)
    }

    /// The images in the graph's input form: as they are for the any-size graph, their
    /// crops resized for the fixed one.
    pub fn preprocess<'a>(&mut self, images: &'a [RgbPixels]) -> Result<GraphInput<'a>, String> {
        match self.kind {
            GraphKind::AnySize => Ok(GraphInput::Images(images)),
            GraphKind::Fixed => {
                let crop_bytes = self.geometry.crop_bytes();
                let mut pixels = vec![0u8; images.len() * crop_bytes];
                for (image, crop) in images.iter().zip(pixels.chunks_exact_mut(crop_bytes)) {
                    self.resizer.resize_crop(image, self.geometry, crop)?;
                }
                Ok(GraphInput::Crops {
                    count: images.len(),
                    pixels,
                })
            }
        }
    }

    /// The graph on a preprocessed batch: image by image for the any-size graph (one image
    /// of its own size per run), one run for the fixed graph's whole batch.
    pub fn run(&mut self, input: GraphInput) -> Result<Vec<Vec<f32>>, String> {
        match input {
            GraphInput::Images(images) => images.iter().map(|image| self.run_one(image)).collect(),
            GraphInput::Crops { count: 0, .. } => Ok(Vec::new()),
            GraphInput::Crops { count, pixels } => self.run_crops(count, &pixels),
        }
    }

    /// One any-size image; the pixels go in without a copy.
    fn run_one(&mut self, image: &RgbPixels) -> Result<Vec<f32>, String> {
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

    /// `count` crops in one run; the output `[count, labels]` split into one vector per crop.
    fn run_crops(&mut self, count: usize, pixels: &[u8]) -> Result<Vec<Vec<f32>>, String> {
        let size = self.geometry.crop as usize;
        let tensor =
            TensorRef::from_array_view(([count, size, size, 3], pixels)).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let (shape, probabilities) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        if shape.first() != Some(&(count as i64)) || probabilities.len() % count != 0 {
            return Err(format!("{count} images gave an output of shape {shape:?}"));
        }
        Ok(probabilities
            .chunks_exact(probabilities.len() / count)
            .map(<[f32]>::to_vec)
            .collect())
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

/// A 320x240 colour gradient, made in code: no file to ship, and every step of the
/// pipeline (resize and crop, in the graph or here, then normalisation) runs once.
fn warm_up_image() -> RgbPixels {
    let (width, height) = (320u32, 240u32);
    let data = (0..height)
        .flat_map(|y| (0..width).flat_map(move |x| [(x * 255 / width) as u8, (y * 255 / height) as u8, 128]))
        .collect();
    RgbPixels { width, height, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_shape_gives_the_graph_kind() {
        assert_eq!(GraphKind::of_input(&[-1, -1, 3], 224), Some(GraphKind::AnySize));
        assert_eq!(GraphKind::of_input(&[-1, -1, 3], 160), Some(GraphKind::AnySize));
        assert_eq!(
            GraphKind::of_input(&[-1, 224, 224, 3], 224),
            Some(GraphKind::Fixed)
        );
        assert_eq!(
            GraphKind::of_input(&[-1, 160, 160, 3], 160),
            Some(GraphKind::Fixed)
        );
        for (refused, crop) in [
            (&[224, 224, 3][..], 224),
            (&[-1, -1, 4], 224),
            (&[1, 224, 224, 3], 224),
            (&[-1, 256, 256, 3], 224),
            (&[-1, 3, 224, 224], 224),
            (&[-1, -1, -1, 3], 224),
            // A fixed graph for another crop than the model's metadata says.
            (&[-1, 224, 224, 3], 160),
            (&[-1, 160, 160, 3], 224),
            (&[-1, 160, 224, 3], 160),
        ] {
            assert_eq!(GraphKind::of_input(refused, crop), None, "{refused:?} {crop}");
        }
    }
}

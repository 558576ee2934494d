//! Decoding to uint8 RGB pixels and running the ONNX graph, which holds the preprocessing.
//!
//! The predictor contract is batch-shaped, as TEI's `predict(batch)` or LitServe's
//! decode → batch → predict → unbatch: each request decodes its own image, and
//! [`Predictor::infer`] takes a slice of decoded images and returns one probability vector
//! per image. A single request is a batch of one.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, RgbImage};
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;
use turbojpeg::{Colorspace, Decompressor, PixelFormat};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::errors::ServiceError;

const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

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

/// 'jpeg' or 'png' from the leading bytes, whatever Content-Type claimed.
fn sniff_image_format(data: &[u8]) -> Result<ImageFormat, ServiceError> {
    if data.starts_with(JPEG_MAGIC) {
        Ok(ImageFormat::Jpeg)
    } else if data.starts_with(PNG_MAGIC) {
        Ok(ImageFormat::Png)
    } else {
        Err(ServiceError::new(
            "unsupported_image",
            "the image is neither JPEG nor PNG",
        ))
    }
}

fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), ServiceError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(ServiceError::new(
            "unsupported_image",
            format!("the image has no pixels ({width}x{height})"),
        ));
    }
    if pixels > max_pixels {
        return Err(ServiceError::new(
            "image_too_large",
            format!(
                "the image is {width}x{height} = {pixels} pixels; the limit (MAX_IMAGE_PIXELS) is {max_pixels}"
            ),
        ));
    }
    Ok(())
}

/// Decode JPEG/PNG to RGB: greyscale is expanded and alpha dropped, as in every service.
/// The header is read first so an oversized image is refused before it is decompressed.
pub fn decode_image(data: &[u8], max_pixels: u64) -> Result<RgbImage, ServiceError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ServiceError::new("unsupported_image", format!("the image cannot be decoded ({e})"))
    };
    match sniff_image_format(data)? {
        ImageFormat::Jpeg => decode_jpeg(data, max_pixels, unreadable),
        format => {
            let (width, height) = ImageReader::with_format(Cursor::new(data), format)
                .into_dimensions()
                .map_err(|e| unreadable(&e))?;
            check_pixels(width, height, max_pixels)?;
            let mut reader = ImageReader::with_format(Cursor::new(data), format);
            reader.no_limits(); // MAX_IMAGE_PIXELS, checked above, is the limit that counts
            Ok(reader.decode().map_err(|e| unreadable(&e))?.into_rgb8())
        }
    }
}

/// libjpeg-turbo (TurboJPEG 3, built from source into the binary) straight to RGB: the
/// decoder the Python ONNX service uses through simplejpeg, so both hand the graph the same
/// pixels, and the fastest measured here (figures in README.md). Warnings count as
/// errors, so a truncated or corrupt JPEG is refused as in the Python services. What
/// TurboJPEG cannot convert to RGB (CMYK, say) goes to zune-jpeg, which decides.
fn decode_jpeg(
    data: &[u8],
    max_pixels: u64,
    unreadable: impl Fn(&dyn std::fmt::Display) -> ServiceError,
) -> Result<RgbImage, ServiceError> {
    let mut decompressor = Decompressor::new().map_err(|e| unreadable(&e))?;
    let header = decompressor.read_header(data).map_err(|e| unreadable(&e))?;
    let width = u32::try_from(header.width).unwrap_or(u32::MAX);
    let height = u32::try_from(header.height).unwrap_or(u32::MAX);
    check_pixels(width, height, max_pixels)?;
    if matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK) {
        return decode_jpeg_zune(data, unreadable);
    }
    let mut image = turbojpeg::Image {
        pixels: vec![0; 3 * header.width * header.height],
        width: header.width,
        pitch: 3 * header.width,
        height: header.height,
        format: PixelFormat::RGB,
    };
    decompressor
        .decompress(data, image.as_deref_mut())
        .map_err(|e| unreadable(&e))?;
    RgbImage::from_raw(width, height, image.pixels).ok_or_else(|| unreadable(&"unexpected pixel buffer size"))
}

/// zune-jpeg in strict mode, for the colour spaces TurboJPEG does not turn into RGB.
fn decode_jpeg_zune(
    data: &[u8],
    unreadable: impl Fn(&dyn std::fmt::Display) -> ServiceError,
) -> Result<RgbImage, ServiceError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(true)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    let pixels = decoder.decode().map_err(|e| unreadable(&e))?;
    let (width, height) = decoder.dimensions().unwrap_or((0, 0));
    let (width, height) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| unreadable(&"unexpected pixel buffer size"))
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
    pub fn infer(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, String> {
        images.iter().map(|image| self.infer_one(image)).collect()
    }

    /// One image; the pixels go in without a copy.
    fn infer_one(&mut self, image: &RgbImage) -> Result<Vec<f32>, String> {
        let shape = [image.height() as usize, image.width() as usize, 3];
        let tensor =
            TensorRef::from_array_view((shape, image.as_raw().as_slice())).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let (_, probabilities) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(probabilities.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_refuses_other_formats() {
        assert_eq!(
            decode_image(b"GIF89a....", 100).unwrap_err().error_type,
            "unsupported_image"
        );
        assert_eq!(
            decode_image(b"", 100).unwrap_err().error_type,
            "unsupported_image"
        );
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/coffee.jpg");
        let data = std::fs::read(path).unwrap();
        assert_eq!(
            decode_image(&data, 1000).unwrap_err().error_type,
            "image_too_large"
        );
        let image = decode_image(&data, 40_000_000).unwrap();
        assert_eq!((image.width(), image.height()), (600, 400));
    }

    #[test]
    fn cmyk_jpeg_is_decoded_to_rgb() {
        let cmyk = turbojpeg::Image {
            pixels: vec![40u8; 16 * 8 * 4],
            width: 16,
            pitch: 16 * 4,
            height: 8,
            format: PixelFormat::CMYK,
        };
        let jpeg = turbojpeg::compress(cmyk.as_deref(), 90, turbojpeg::Subsamp::None).unwrap();
        assert!(matches!(
            turbojpeg::read_header(&jpeg).unwrap().colorspace,
            Colorspace::CMYK | Colorspace::YCCK
        ));
        let image = decode_image(&jpeg, 1000).unwrap();
        assert_eq!(
            (image.width(), image.height(), image.as_raw().len()),
            (16, 8, 16 * 8 * 3)
        );
    }

    #[test]
    fn greyscale_and_alpha_become_rgb() {
        for name in ["camera_grey.png", "coffee_alpha.png", "gravel_grey.jpg"] {
            let path = format!("{}/../images/{name}", env!("CARGO_MANIFEST_DIR"));
            let image = decode_image(&std::fs::read(path).unwrap(), 40_000_000).unwrap();
            assert_eq!(
                image.as_raw().len(),
                (image.width() * image.height() * 3) as usize
            );
        }
    }
}

//! Image bytes to the uint8 RGB pixels the graph takes, as Pillow's
//! `Image.open(data).convert("RGB")` reads them (contract/README.md): greyscale and palette
//! expanded, alpha dropped (not composited), 16-bit samples cut to their high byte, ancillary
//! PNG chunks skipped unread. The size limits are checked from the header, before anything
//! is decompressed.

use std::io::Cursor;

use png::{ColorType, Transformations};

use crate::errors::{ErrorType, ServiceError};
use crate::geometry::Geometry;
use crate::jpeg::JpegDecoder;

const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Decoded pixels, row-major `[height, width, 3]`: the graph's input as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbPixels {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// MAX_IMAGE_PIXELS and MAX_ASPECT_RATIO: together they bound a request's memory (the decoded
/// pixels, and a resize of at most resize x resize·ratio, resize the model's shorter side).
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    pub max_pixels: u64,
    pub max_aspect_ratio: u32,
}

pub fn unreadable(cause: &dyn std::fmt::Display) -> ServiceError {
    ServiceError::new(
        ErrorType::UnsupportedImage,
        format!("the image cannot be decoded ({cause})"),
    )
}

/// The pixel count first (413), then the elongation (422), as in every service.
pub fn check_dimensions(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ServiceError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(ServiceError::new(
            ErrorType::UnsupportedImage,
            format!("the image has no pixels ({width}x{height})"),
        ));
    }
    if pixels > limits.max_pixels {
        return Err(ServiceError::new(
            ErrorType::ImageTooLarge,
            format!(
                "the image is {width}x{height} = {pixels} pixels; the limit (MAX_IMAGE_PIXELS) is {}",
                limits.max_pixels
            ),
        ));
    }
    let (longer, shorter) = (width.max(height), width.min(height));
    if u64::from(longer) > u64::from(limits.max_aspect_ratio) * u64::from(shorter) {
        return Err(ServiceError::new(
            ErrorType::ExtremeAspectRatio,
            format!(
                "the image is {width}x{height}: its longer side is more than {} times its shorter (MAX_ASPECT_RATIO)",
                limits.max_aspect_ratio
            ),
        ));
    }
    Ok(())
}

/// Decodes JPEG and PNG; one per inference thread (it holds a TurboJPEG handle).
pub struct ImageDecoder {
    jpeg: JpegDecoder,
}

impl ImageDecoder {
    /// `jpeg_dct_scaling`: with JPEG_DCT_SCALING, the model's sizes, for which large JPEGs
    /// are decoded smaller (jpeg.rs); None decodes them whole.
    pub fn new(jpeg_dct_scaling: Option<Geometry>) -> Result<Self, String> {
        Ok(Self {
            jpeg: JpegDecoder::new(jpeg_dct_scaling)?,
        })
    }

    /// JPEG or PNG by its leading bytes, whatever Content-Type claimed.
    pub fn decode(&mut self, data: &[u8], limits: &ImageLimits) -> Result<RgbPixels, ServiceError> {
        if data.starts_with(JPEG_MAGIC) {
            self.jpeg.decode(data, limits)
        } else if data.starts_with(PNG_MAGIC) {
            decode_png(data, limits)
        } else {
            Err(ServiceError::new(
                ErrorType::UnsupportedImage,
                "the image is neither JPEG nor PNG",
            ))
        }
    }
}

/// The `png` crate, told to expand palettes and low bit depths and to keep the high byte of
/// 16-bit samples (as Pillow does for RGB, RGBA and LA; the contract makes it the rule for
/// 16-bit greyscale too), then the channels made RGB in place: no second image buffer.
fn decode_png(data: &[u8], limits: &ImageLimits) -> Result<RgbPixels, ServiceError> {
    let mut decoder = png::Decoder::new(Cursor::new(data));
    // Text and ICC chunks are skipped by their length, never buffered or inflated (a zTXt
    // of a few hundred KB can inflate to gigabytes).
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    let header = decoder.read_header_info().map_err(|e| unreadable(&e))?;
    let (width, height) = (header.width, header.height);
    check_dimensions(width, height, limits)?;
    let mut reader = decoder.read_info().map_err(|e| unreadable(&e))?;
    let (color_type, _) = reader.output_color_type();
    let decoded_size = reader
        .output_buffer_size()
        .ok_or_else(|| unreadable(&"the image is too large for this machine"))?;
    let count = width as usize * height as usize;
    let mut pixels = vec![0u8; decoded_size.max(3 * count)];
    reader
        .next_frame(&mut pixels[..decoded_size])
        .map_err(|e| unreadable(&e))?;
    to_rgb_in_place(&mut pixels, count, color_type);
    pixels.truncate(3 * count);
    Ok(RgbPixels {
        width,
        height,
        data: pixels,
    })
}

/// `pixels` holds `count` pixels of `color_type` (8-bit) at its start and room for `count`
/// RGB pixels; rewrite them as RGB. Widening runs from the end, narrowing from the start, so
/// no sample is overwritten before it is read.
fn to_rgb_in_place(pixels: &mut [u8], count: usize, color_type: ColorType) {
    match color_type {
        ColorType::Grayscale => {
            for i in (0..count).rev() {
                let grey = pixels[i];
                pixels[3 * i..3 * i + 3].fill(grey);
            }
        }
        ColorType::GrayscaleAlpha => {
            for i in (0..count).rev() {
                let grey = pixels[2 * i];
                pixels[3 * i..3 * i + 3].fill(grey);
            }
        }
        ColorType::Rgba => {
            for i in 0..count {
                pixels.copy_within(4 * i..4 * i + 3, 3 * i);
            }
        }
        // EXPAND turns palettes into RGB or RGBA; RGB is already what the graph takes.
        ColorType::Rgb | ColorType::Indexed => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ImageLimits = ImageLimits {
        max_pixels: 40_000_000,
        max_aspect_ratio: 20,
    };

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../images/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn decode(data: &[u8], limits: &ImageLimits) -> Result<RgbPixels, ServiceError> {
        ImageDecoder::new(None).unwrap().decode(data, limits)
    }

    #[test]
    fn sniffing_refuses_other_formats() {
        for data in [&b"GIF89a...."[..], b""] {
            assert_eq!(
                decode(data, &LIMITS).unwrap_err().error_type,
                ErrorType::UnsupportedImage
            );
        }
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        let data = sample("coffee.jpg");
        let small = ImageLimits {
            max_pixels: 1000,
            ..LIMITS
        };
        assert_eq!(
            decode(&data, &small).unwrap_err().error_type,
            ErrorType::ImageTooLarge
        );
        let image = decode(&data, &LIMITS).unwrap();
        assert_eq!((image.width, image.height), (600, 400));
    }

    #[test]
    fn limits_pixels_first_then_aspect_ratio() {
        let check = |w, h, max_pixels| {
            check_dimensions(
                w,
                h,
                &ImageLimits {
                    max_pixels,
                    max_aspect_ratio: 20,
                },
            )
            .err()
            .map(|e| e.error_type)
        };
        assert_eq!(check(400, 20, 100_000), None); // exactly 20:1 is allowed
        assert_eq!(check(20, 401, 100_000), Some(ErrorType::ExtremeAspectRatio));
        assert_eq!(check(40_000, 2, 100_000), Some(ErrorType::ExtremeAspectRatio));
        assert_eq!(check(40_000, 2, 1_000), Some(ErrorType::ImageTooLarge));
        assert_eq!(check(0, 5, 1_000), Some(ErrorType::UnsupportedImage));
        assert_eq!(check(u32::MAX, u32::MAX, u64::MAX), None);
    }

    #[test]
    fn greyscale_and_alpha_become_rgb() {
        for name in ["camera_grey.png", "coffee_alpha.png", "gravel_grey.jpg"] {
            let image = decode(&sample(name), &LIMITS).unwrap();
            assert_eq!(image.data.len(), (image.width * image.height * 3) as usize);
        }
    }

    #[test]
    fn in_place_conversions() {
        let mut grey = vec![1, 2, 0, 0, 0, 0];
        to_rgb_in_place(&mut grey, 2, ColorType::Grayscale);
        assert_eq!(grey, [1, 1, 1, 2, 2, 2]);
        let mut grey_alpha = vec![1, 9, 2, 9, 0, 0];
        to_rgb_in_place(&mut grey_alpha, 2, ColorType::GrayscaleAlpha);
        assert_eq!(grey_alpha, [1, 1, 1, 2, 2, 2]);
        let mut rgba = vec![1, 2, 3, 9, 4, 5, 6, 9];
        to_rgb_in_place(&mut rgba, 2, ColorType::Rgba);
        assert_eq!(rgba[..6], [1, 2, 3, 4, 5, 6]);
    }
}

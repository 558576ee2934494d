//! The fixed graph's preprocessing, done here: torchvision's `Resize(256)` then
//! `CenterCrop(224)`, as one antialiased uint8 resize of only the region that survives the
//! crop (with the whole image's scale and the filter clipped at the image's own borders, as
//! Pillow's `box`). Resizing 224x224 pixels instead of the whole photo is most of the saving.
//! RESIZER picks who resizes: `pillow` (pillow_resize.rs: Pillow's arithmetic, the
//! reference's pixels) or `simd` (fast_image_resize: faster, one level off on some pixels).
//!
//! The arithmetic is model/weather_model/crop.py's, line for line (the tests hold numbers
//! computed by it); change both together.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::decode::RgbPixels;
use crate::pillow_resize;

/// weather_model.contract's RESIZE_SIZE: the shorter side after torchvision's Resize.
pub const RESIZE_SIZE: u32 = 256;
/// weather_model.contract's CROP_SIZE: the side of the centre crop, the fixed graph's input.
pub const CROP_SIZE: u32 = 224;
/// Bytes of one crop, `[CROP_SIZE, CROP_SIZE, 3]`.
pub const CROP_BYTES: usize = (CROP_SIZE * CROP_SIZE * 3) as usize;

/// The crate and version that resizes with RESIZER=simd, for /info (a test checks it
/// against Cargo.lock).
pub const SIMD_RESIZER: &str = "fast_image_resize 6.1.0";
/// What resizes with RESIZER=pillow, for /info.
pub const PILLOW_RESIZER: &str = "Pillow's bilinear resize, ported (src/pillow_resize.rs)";

/// RESIZER: who resizes the crop region for the fixed graph.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizerKind {
    /// Pillow's arithmetic: the reference's own pixels, within the fidelity bound.
    Pillow,
    /// fast_image_resize: SIMD, about 3x faster, one level off on some pixels.
    Simd,
}

impl ResizerKind {
    /// The setting's value, as RESIZER spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pillow => "pillow",
            Self::Simd => "simd",
        }
    }
}

/// libjpeg-turbo decodes at n/8 of full size in the DCT domain; 1/2, 1/4 and 1/8 have fast
/// inverse DCTs, the other eighths do not.
const DCT_SCALE_DENOMINATORS: [u32; 3] = [8, 4, 2];

/// torchvision's Resize(RESIZE_SIZE) output size: the shorter side to RESIZE_SIZE, the longer
/// to `RESIZE_SIZE * long / short` rounded down (u64: a MAX_ASPECT_RATIO in the millions
/// would overflow u32).
pub fn resized_size(width: u32, height: u32) -> (u64, u64) {
    let (short, long) = (u64::from(width.min(height)), u64::from(width.max(height)));
    let (resize, new_long) = (u64::from(RESIZE_SIZE), u64::from(RESIZE_SIZE) * long / short);
    if width <= height {
        (resize, new_long)
    } else {
        (new_long, resize)
    }
}

/// A region of the source image, in (fractional) source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// The region of a `width` x `height` image that Resize then CenterCrop turn into the crop.
pub fn crop_box(width: u32, height: u32) -> CropBox {
    let (new_width, new_height) = resized_size(width, height);
    let scale_x = f64::from(width) / new_width as f64;
    let scale_y = f64::from(height) / new_height as f64;
    // NOTE: half to even, as Python's round() in torchvision's CenterCrop: a resized side of
    // 341 starts its crop at 58, not 59.
    let start = |side: u64| ((side - u64::from(CROP_SIZE)) as f64 / 2.0).round_ties_even();
    CropBox {
        left: start(new_width) * scale_x,
        top: start(new_height) * scale_y,
        width: f64::from(CROP_SIZE) * scale_x,
        height: f64::from(CROP_SIZE) * scale_y,
    }
}

/// The largest d in 8, 4, 2 (else 1) such that a JPEG decoded at 1/d keeps its shorter side
/// at least RESIZE_SIZE: the resize still only shrinks, so its antialiasing still applies.
pub fn dct_scale_denominator(width: u32, height: u32) -> u32 {
    let short = width.min(height);
    DCT_SCALE_DENOMINATORS
        .into_iter()
        .find(|&d| short.div_ceil(d) >= RESIZE_SIZE)
        .unwrap_or(1)
}

/// The model's own account of its preprocessing (metadata.json's "preprocessing", written by
/// the exporter from weather_model.contract) must be the sizes compiled in here: a model
/// exported for other sizes would otherwise get subtly wrong pixels, not an error.
pub fn check_sizes(metadata: &serde_json::Value) -> Result<(), String> {
    let preprocessing = &metadata["preprocessing"];
    let declared = (
        preprocessing["resize_shorter_side"].as_u64(),
        preprocessing["center_crop"].as_u64(),
    );
    if declared == (Some(u64::from(RESIZE_SIZE)), Some(u64::from(CROP_SIZE))) {
        return Ok(());
    }
    Err(format!(
        "metadata.json's preprocessing (resize_shorter_side {}, center_crop {}) is not this \
         service's ({RESIZE_SIZE}, {CROP_SIZE})",
        preprocessing["resize_shorter_side"], preprocessing["center_crop"]
    ))
}

/// One per inference thread: both resizers keep scratch buffers between calls.
pub struct CropResizer {
    kind: ResizerKind,
    /// Single-threaded (the crate's rayon feature is off), with the best SIMD extension
    /// this CPU has.
    simd: Resizer,
    pillow: pillow_resize::Buffers,
}

impl CropResizer {
    pub fn new(kind: ResizerKind) -> Self {
        Self {
            kind,
            simd: Resizer::new(),
            pillow: pillow_resize::Buffers::default(),
        }
    }

    /// For /info: what resizes, and the SIMD extension in use ("avx2", "sse4_1", "neon",
    /// "none"; none for Pillow's arithmetic, which is plain Rust).
    pub fn describe(&self) -> (&'static str, Option<String>) {
        match self.kind {
            ResizerKind::Pillow => (PILLOW_RESIZER, None),
            ResizerKind::Simd => (
                SIMD_RESIZER,
                Some(format!("{:?}", self.simd.cpu_extensions()).to_ascii_lowercase()),
            ),
        }
    }

    /// `image`'s centre crop, resized with Pillow's antialiased bilinear filter, written to
    /// `crop` (CROP_BYTES: `[CROP_SIZE, CROP_SIZE, 3]`).
    pub fn resize_crop(&mut self, image: &RgbPixels, crop: &mut [u8]) -> Result<(), String> {
        let region = crop_box(image.width, image.height);
        if self.kind == ResizerKind::Pillow {
            // The box as the Python service hands it to Pillow: (left, top, right, bottom).
            let bounds = [
                region.left,
                region.top,
                region.left + region.width,
                region.top + region.height,
            ];
            let side = CROP_SIZE as usize;
            pillow_resize::resize_region(image, bounds, (side, side), crop, &mut self.pillow);
            return Ok(());
        }
        let source = ImageRef::new(image.width, image.height, &image.data, PixelType::U8x3)
            .map_err(|e| e.to_string())?;
        let mut target =
            Image::from_slice_u8(CROP_SIZE, CROP_SIZE, crop, PixelType::U8x3).map_err(|e| e.to_string())?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(region.left, region.top, region.width, region.height);
        self.simd
            .resize(&source, &mut target, &options)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (width, height), then resized_size, crop_box and dct_scale_denominator of them.
    type Case = ((u32, u32), (u64, u64), [f64; 4], u32);

    /// Numbers from model/weather_model/crop.py:
    /// `resized_size(w, h), crop_box(w, h), dct_scale_denominator(w, h)`.
    #[test]
    fn crop_arithmetic_is_crop_py() {
        #[rustfmt::skip]
        let table: [Case; 14] = [
            ((1200, 727), (422, 256), [281.5165876777251, 45.4375, 636.9668246445498, 636.125], 2),
            ((727, 1200), (256, 422), [45.4375, 281.5165876777251, 636.125, 636.9668246445498], 2),
            ((512, 512), (256, 256), [32.0, 32.0, 448.0, 448.0], 2),
            ((256, 256), (256, 256), [16.0, 16.0, 224.0, 224.0], 1),
            ((255, 5100), (256, 5120), [15.9375, 2438.4375, 223.125, 223.125], 1),
            ((5100, 255), (5120, 256), [2438.4375, 15.9375, 223.125, 223.125], 1),
            // Upscaling: the shorter side grows to 256.
            ((100, 60), (426, 256), [23.708920187793428, 3.75, 52.582159624413144, 52.5], 1),
            // (341 - 224) / 2 = 58.5 rounds to 58, (297 - 224) / 2 = 36.5 to 36: half to even.
            ((320, 240), (341, 256), [54.42815249266862, 15.0, 210.20527859237538, 210.0], 1),
            ((297, 256), (297, 256), [36.0, 16.0, 224.0, 224.0], 1),
            // (299 - 224) / 2 = 37.5 rounds up to 38.
            ((301, 257), (299, 256), [38.25418060200669, 16.0625, 225.4983277591973, 224.875], 1),
            ((1001, 999), (256, 256), [62.5625, 62.4375, 875.875, 874.125], 2),
            ((2047, 1025), (511, 256), [576.8454011741683, 64.0625, 897.3150684931506, 896.875], 4),
            ((1023, 2049), (256, 512), [63.9375, 576.28125, 895.125, 896.4375], 4),
            ((4000, 3000), (341, 256), [680.3519061583578, 187.5, 2627.565982404692, 2625.0], 8),
        ];
        for ((w, h), resized, [left, top, width, height], denominator) in table {
            assert_eq!(resized_size(w, h), resized, "{w}x{h}");
            let expected = CropBox {
                left,
                top,
                width,
                height,
            };
            assert_eq!(crop_box(w, h), expected, "{w}x{h}");
            assert_eq!(dct_scale_denominator(w, h), denominator, "{w}x{h}");
        }
    }

    #[test]
    fn dct_denominator_keeps_the_shorter_side_at_least_256() {
        // ceil(511 / 2) = 256, ceil(2041 / 8) = 256, ceil(2040 / 8) = 255.
        assert_eq!(dct_scale_denominator(511, 4000), 2);
        assert_eq!(dct_scale_denominator(510, 4000), 1);
        assert_eq!(dct_scale_denominator(2041, 2041), 8);
        assert_eq!(dct_scale_denominator(2040, 2040), 4);
    }

    const KINDS: [ResizerKind; 2] = [ResizerKind::Pillow, ResizerKind::Simd];

    fn resized(image: &RgbPixels, kind: ResizerKind) -> Vec<u8> {
        let mut crop = vec![0u8; CROP_BYTES];
        CropResizer::new(kind).resize_crop(image, &mut crop).unwrap();
        crop
    }

    fn image(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> RgbPixels {
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                data.extend(pixel(x, y));
            }
        }
        RgbPixels { width, height, data }
    }

    #[test]
    fn a_uniform_image_stays_uniform() {
        for ((w, h), kind) in [(1200, 727), (100, 60), (256, 256), (255, 5100)]
            .into_iter()
            .flat_map(|size| KINDS.map(|kind| (size, kind)))
        {
            let crop = resized(&image(w, h, |_, _| [200, 17, 99]), kind);
            assert_eq!(crop.len(), CROP_BYTES);
            assert!(crop.chunks(3).all(|p| p == [200, 17, 99]), "{w}x{h} {kind:?}");
        }
    }

    /// A horizontal ramp stays a ramp: non-decreasing along each row, the same on every row,
    /// and only the cropped span of it survives (the crop starts a quarter-ish in).
    #[test]
    fn a_horizontal_gradient_stays_monotonic() {
        let (w, h) = (1200, 727);
        let ramp = image(w, h, |x, _| [(x * 255 / (w - 1)) as u8, 0, 0]);
        for kind in KINDS {
            let crop = resized(&ramp, kind);
            let row = |y: usize| -> Vec<u8> { (0..224).map(|x| crop[(y * 224 + x) * 3]).collect() };
            let first = row(0);
            assert!(
                first.windows(2).all(|pair| pair[0] <= pair[1]),
                "{kind:?} {first:?}"
            );
            assert!((0..224).all(|y| row(y) == first));
            // The crop spans x = 281.5 .. 918.5 of 1200: values about 60 .. 195.
            assert!(
                (55..=65).contains(&first[0]) && (190..=200).contains(&first[223]),
                "{kind:?} {first:?}"
            );
        }
    }

    /// A 256x256 image needs no resize: its crop is the centre 224x224, copied.
    #[test]
    fn at_256_the_crop_is_a_plain_centre_crop() {
        let source = image(256, 256, |x, y| [x as u8, y as u8, (x ^ y) as u8]);
        for kind in KINDS {
            let crop = resized(&source, kind);
            for (y, x) in [(0, 0), (0, 223), (223, 0), (100, 57)] {
                let (sx, sy) = (x + 16, y + 16);
                assert_eq!(
                    crop[(y * 224 + x) * 3..][..3],
                    [sx as u8, sy as u8, (sx ^ sy) as u8]
                );
            }
        }
    }

    /// fast_image_resize's 16-bit weights put it at most one level from Pillow's 22-bit ones.
    #[test]
    fn the_two_resizers_differ_by_at_most_one_level() {
        let texture = image(1200, 727, |x, y| {
            [(x * 7 + y * 3) as u8, (x * y) as u8, ((x ^ y) * 5) as u8]
        });
        let (pillow, simd) = (
            resized(&texture, ResizerKind::Pillow),
            resized(&texture, ResizerKind::Simd),
        );
        let worst = pillow.iter().zip(&simd).map(|(a, b)| a.abs_diff(*b)).max();
        assert_eq!(worst, Some(1));
    }

    #[test]
    fn metadata_sizes_must_be_the_compiled_ones() {
        let metadata = |resize, crop| serde_json::json!({"preprocessing": {"resize_shorter_side": resize, "center_crop": crop}});
        assert_eq!(check_sizes(&metadata(256, 224)), Ok(()));
        assert_eq!(
            check_sizes(&metadata(288, 256)).unwrap_err(),
            "metadata.json's preprocessing (resize_shorter_side 288, center_crop 256) is not this \
             service's (256, 224)"
        );
        assert!(check_sizes(&serde_json::json!({})).is_err());
    }

    #[test]
    fn resizer_names_its_locked_version() {
        let lock = include_str!("../Cargo.lock");
        let version = SIMD_RESIZER.strip_prefix("fast_image_resize ").unwrap();
        assert!(
            lock.contains(&format!(
                "name = \"fast_image_resize\"\nversion = \"{version}\"\n"
            )),
            "SIMD_RESIZER says {version}; Cargo.lock locks another version"
        );
    }
}

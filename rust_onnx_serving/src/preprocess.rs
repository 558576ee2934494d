//! The fixed graph's preprocessing, done here: torchvision's `Resize(resize)` then
//! `CenterCrop(crop)`, the model's sizes (geometry.rs), as one antialiased uint8 resize of
//! only the region that survives the crop (with the whole image's scale and the filter
//! clipped at the image's own borders, as Pillow's `box`). Resizing a crop's worth of pixels
//! instead of the whole photo is most of the saving. RESIZER picks who resizes: `pillow`
//! (pillow_resize.rs: Pillow's arithmetic, the reference's pixels) or `simd`
//! (fast_image_resize: faster, one level off on some pixels).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::decode::RgbPixels;
use crate::geometry::Geometry;
use crate::pillow_resize;

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

    /// `image`'s centre crop as `geometry` places it, resized with Pillow's antialiased
    /// bilinear filter, written to `crop` (`geometry.crop_bytes()`: `[crop, crop, 3]`).
    pub fn resize_crop(
        &mut self,
        image: &RgbPixels,
        geometry: Geometry,
        crop: &mut [u8],
    ) -> Result<(), String> {
        let region = geometry.crop_box(image.width, image.height);
        let side = geometry.crop;
        if self.kind == ResizerKind::Pillow {
            // The box as the Python service hands it to Pillow: (left, top, right, bottom).
            let bounds = [
                region.left,
                region.top,
                region.left + region.width,
                region.top + region.height,
            ];
            let out_size = (side as usize, side as usize);
            pillow_resize::resize_region(image, bounds, out_size, crop, &mut self.pillow);
            return Ok(());
        }
        let source = ImageRef::new(image.width, image.height, &image.data, PixelType::U8x3)
            .map_err(|e| e.to_string())?;
        let mut target =
            Image::from_slice_u8(side, side, crop, PixelType::U8x3).map_err(|e| e.to_string())?;
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
    use crate::geometry::DEMO;

    const KINDS: [ResizerKind; 2] = [ResizerKind::Pillow, ResizerKind::Simd];

    fn resized(image: &RgbPixels, kind: ResizerKind) -> Vec<u8> {
        resized_to(image, kind, DEMO)
    }

    fn resized_to(image: &RgbPixels, kind: ResizerKind, geometry: Geometry) -> Vec<u8> {
        let mut crop = vec![0u8; geometry.crop_bytes()];
        CropResizer::new(kind)
            .resize_crop(image, geometry, &mut crop)
            .unwrap();
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
            assert_eq!(crop.len(), DEMO.crop_bytes());
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

    /// An image whose shorter side is already `resize` needs no resize: its crop is the
    /// centre `crop` x `crop`, copied, at the model's sizes (256/224, 180/160) and offsets
    /// ((237 - 160) / 2 = 38.5 starts at 38).
    #[test]
    fn at_the_resize_size_the_crop_is_a_plain_centre_crop() {
        let small = Geometry {
            resize: 180,
            crop: 160,
        };
        for (geometry, (width, height), (left, top)) in [
            (DEMO, (256, 256), (16, 16)),
            (small, (180, 180), (10, 10)),
            (small, (237, 180), (38, 10)),
        ] {
            let source = image(width, height, |x, y| [x as u8, y as u8, (x ^ y) as u8]);
            let side = geometry.crop as usize;
            for kind in KINDS {
                let crop = resized_to(&source, kind, geometry);
                assert_eq!(crop.len(), side * side * 3);
                for (y, x) in [
                    (0, 0),
                    (0, side - 1),
                    (side - 1, 0),
                    (side - 1, side - 1),
                    (100, 57),
                ] {
                    let (sx, sy) = (x + left, y + top);
                    assert_eq!(
                        crop[(y * side + x) * 3..][..3],
                        [sx as u8, sy as u8, (sx ^ sy) as u8],
                        "{geometry:?} {width}x{height} {kind:?} ({x}, {y})"
                    );
                }
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

//! The model's preprocessing sizes, torchvision's `Resize(resize)` then `CenterCrop(crop)`,
//! as metadata.json's "preprocessing" states them (the exporter writes each network's
//! torchvision preset: weather_model/architectures.py), checked once at startup, and the
//! arithmetic that follows from them: the resized size, the region of the source image that
//! becomes the crop, and how much smaller a JPEG may be decoded.
//!
//! The arithmetic is model/weather_model/crop.py's, line for line (the tests hold numbers
//! computed by it); change both together.

use serde_json::{Value, json};

/// The largest `resize_shorter_side` this service takes. It bounds a request's memory (the
/// any-size graph resizes the whole image to `resize` x `resize`·MAX_ASPECT_RATIO; a crop is
/// at most `resize` squared) and catches a mistyped size at startup.
pub const MAX_RESIZE_SIDE: u32 = 4096;

/// libjpeg-turbo decodes at n/8 of full size in the DCT domain; 1/2, 1/4 and 1/8 have fast
/// inverse DCTs, the other eighths do not.
const DCT_SCALE_DENOMINATORS: [u32; 3] = [8, 4, 2];

/// metadata.json's `preprocessing.resize_shorter_side` and `preprocessing.center_crop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// The shorter side after torchvision's Resize.
    pub resize: u32,
    /// The side of the centre crop: the fixed graph's input is `[batch, crop, crop, 3]`.
    pub crop: u32,
}

impl Geometry {
    /// The sizes in `metadata`, checked: whole numbers, `1 <= crop <= resize <=
    /// MAX_RESIZE_SIDE`, and the crop the entry of `graph_file` declares, if it declares
    /// one. The error names the field, the value, and what it should be.
    pub fn from_metadata(metadata: &Value, graph_file: &str) -> Result<Self, String> {
        let preprocessing = &metadata["preprocessing"];
        let resize = side(
            preprocessing,
            "resize_shorter_side",
            (MAX_RESIZE_SIDE, "the largest this service resizes to"),
        )?;
        let crop = side(
            preprocessing,
            "center_crop",
            (resize, "preprocessing.resize_shorter_side"),
        )?;
        let geometry = Self { resize, crop };
        geometry.check_declared_input(&metadata["graphs"][graph_file]["input"]["shape"], graph_file)?;
        Ok(geometry)
    }

    /// A graph entry's `[batch, height, width, 3]` with numbers for height and width is the
    /// fixed graph's: they must be the crop. Named dimensions (the any-size graph's
    /// `["height", "width", 3]`) declare no size; the session's own shape is checked again
    /// when it loads (predictor.rs).
    fn check_declared_input(self, shape: &Value, graph_file: &str) -> Result<(), String> {
        let Some([batch, height, width, channels]) = shape.as_array().map(Vec::as_slice) else {
            return Ok(());
        };
        let crop = u64::from(self.crop);
        if !(height.is_number() || width.is_number())
            || (height.as_u64() == Some(crop) && width.as_u64() == Some(crop))
        {
            return Ok(());
        }
        Err(format!(
            "graphs[\"{graph_file}\"].input.shape is {shape}, a crop other than \
             preprocessing.center_crop ({crop}); expected {}",
            json!([batch, crop, crop, channels])
        ))
    }

    /// Bytes of one crop, `[crop, crop, 3]`.
    pub fn crop_bytes(self) -> usize {
        self.crop as usize * self.crop as usize * 3
    }

    /// torchvision's Resize(resize) output size: the shorter side to `resize`, the longer to
    /// `resize * long / short` rounded down (u64: a MAX_ASPECT_RATIO in the millions would
    /// overflow u32).
    pub fn resized_size(self, width: u32, height: u32) -> (u64, u64) {
        let (short, long) = (u64::from(width.min(height)), u64::from(width.max(height)));
        let resize = u64::from(self.resize);
        let new_long = resize * long / short;
        if width <= height {
            (resize, new_long)
        } else {
            (new_long, resize)
        }
    }

    /// The region of a `width` x `height` image that Resize then CenterCrop turn into the
    /// crop.
    pub fn crop_box(self, width: u32, height: u32) -> CropBox {
        let (new_width, new_height) = self.resized_size(width, height);
        let scale_x = f64::from(width) / new_width as f64;
        let scale_y = f64::from(height) / new_height as f64;
        // NOTE: half to even, as Python's round() in torchvision's CenterCrop: a resized side
        // of 341 starts a 224 crop at 58, not 59.
        let start = |side: u64| ((side - u64::from(self.crop)) as f64 / 2.0).round_ties_even();
        CropBox {
            left: start(new_width) * scale_x,
            top: start(new_height) * scale_y,
            width: f64::from(self.crop) * scale_x,
            height: f64::from(self.crop) * scale_y,
        }
    }

    /// The largest d in 8, 4, 2 (else 1) such that a JPEG decoded at 1/d keeps its shorter
    /// side at least `resize`: the resize still only shrinks, so its antialiasing still
    /// applies.
    pub fn dct_scale_denominator(self, width: u32, height: u32) -> u32 {
        let short = width.min(height);
        DCT_SCALE_DENOMINATORS
            .into_iter()
            .find(|&d| short.div_ceil(d) >= self.resize)
            .unwrap_or(1)
    }
}

/// `preprocessing[field]`, a side in pixels from 1 to `max`, which `max_is` names.
fn side(preprocessing: &Value, field: &str, (max, max_is): (u32, &str)) -> Result<u32, String> {
    let value = &preprocessing[field];
    let problem = match value.as_u64() {
        Some(side @ 1..) if side <= u64::from(max) => return Ok(side as u32),
        Some(side @ 1..) => format!("is {side}, more than {max_is} ({max})"),
        _ if value.is_null() => "is missing".to_owned(),
        _ => format!("is {value}, not a positive whole number"),
    };
    Err(format!(
        "preprocessing.{field} {problem}; expected a whole number of pixels from 1 to {max}"
    ))
}

/// A region of the source image, in (fractional) source pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// The default model's sizes (mobilenet_v3_small's torchvision preset), for tests.
#[cfg(test)]
pub const DEMO: Geometry = Geometry {
    resize: 256,
    crop: 224,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// (width, height), then resized_size, crop_box and dct_scale_denominator of them.
    type Case = ((u32, u32), (u64, u64), [f64; 4], u32);

    fn check(geometry: Geometry, table: &[Case]) {
        for &((w, h), resized, [left, top, width, height], denominator) in table {
            assert_eq!(geometry.resized_size(w, h), resized, "{geometry:?} {w}x{h}");
            let expected = CropBox {
                left,
                top,
                width,
                height,
            };
            assert_eq!(geometry.crop_box(w, h), expected, "{geometry:?} {w}x{h}");
            assert_eq!(
                geometry.dct_scale_denominator(w, h),
                denominator,
                "{geometry:?} {w}x{h}"
            );
        }
    }

    /// Numbers from model/weather_model/crop.py:
    /// `resized_size(w, h), crop_box(w, h), dct_scale_denominator(w, h)`.
    #[test]
    fn crop_arithmetic_is_crop_py() {
        #[rustfmt::skip]
        check(DEMO, &[
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
        ]);
    }

    /// A user's model: Resize(180), CenterCrop(160). Sizes by torchvision's rule (checked
    /// against its `_compute_resized_output_size`), boxes from crop.py with resize=180,
    /// crop=160; e.g. 1200x727: 180 * 1200 // 727 = 297, (297 - 160) / 2 = 68.5 starts at 68,
    /// times 1200 / 297.
    #[test]
    fn crop_arithmetic_follows_the_models_sizes() {
        let small = Geometry {
            resize: 180,
            crop: 160,
        };
        #[rustfmt::skip]
        check(small, &[
            ((1200, 727), (297, 180), [274.74747474747477, 40.388888888888886, 646.4646464646465, 646.2222222222222], 4),
            ((727, 1200), (180, 297), [40.388888888888886, 274.74747474747477, 646.2222222222222, 646.4646464646465], 4),
            ((180, 180), (180, 180), [10.0, 10.0, 160.0, 160.0], 1),
            ((179, 3580), (180, 3600), [9.944444444444445, 1710.4444444444446, 159.11111111111111, 159.11111111111111], 1),
            // Upscaling: the shorter side grows to 180.
            ((100, 60), (300, 180), [23.333333333333332, 3.333333333333333, 53.33333333333333, 53.33333333333333], 1),
            ((320, 240), (240, 180), [53.33333333333333, 13.333333333333332, 213.33333333333331, 213.33333333333331], 1),
            // (237 - 160) / 2 = 38.5 rounds to 38, (239 - 160) / 2 = 39.5 to 40: half to even.
            ((237, 180), (237, 180), [38.0, 10.0, 160.0, 160.0], 1),
            ((239, 180), (239, 180), [40.0, 10.0, 160.0, 160.0], 1),
            ((301, 257), (210, 180), [35.833333333333336, 14.277777777777779, 229.33333333333334, 228.44444444444446], 1),
            // ceil(1439 / 8) = 180: 1/8 still keeps the shorter side at 180.
            ((1439, 1441), (180, 180), [79.94444444444444, 80.05555555555557, 1279.111111111111, 1280.8888888888891], 8),
            ((2879, 1440), (359, 180), [801.949860724234, 80.0, 1283.1197771587745, 1280.0], 8),
            ((4000, 3000), (240, 180), [666.6666666666667, 166.66666666666669, 2666.666666666667, 2666.666666666667], 8),
            ((360, 359), (180, 180), [20.0, 19.944444444444443, 320.0, 319.1111111111111], 2),
        ]);
        // Another model: Resize(232), CenterCrop(224); (309 - 224) / 2 = 42.5 rounds to 42.
        let wide = Geometry {
            resize: 232,
            crop: 224,
        };
        #[rustfmt::skip]
        check(wide, &[
            ((1200, 727), (382, 232), [248.1675392670157, 12.53448275862069, 703.6649214659686, 701.9310344827586], 2),
            ((320, 240), (309, 232), [43.495145631067956, 4.137931034482759, 231.97411003236243, 231.7241379310345], 1),
            ((233, 300), (232, 298), [4.017241379310345, 37.24832214765101, 224.96551724137933, 225.503355704698], 1),
            ((1857, 1856), (232, 232), [32.01724137931034, 32.0, 1792.965517241379, 1792.0], 8),
        ]);
    }

    #[test]
    fn dct_denominator_keeps_the_shorter_side_at_least_resize() {
        // ceil(511 / 2) = 256, ceil(2041 / 8) = 256, ceil(2040 / 8) = 255.
        assert_eq!(DEMO.dct_scale_denominator(511, 4000), 2);
        assert_eq!(DEMO.dct_scale_denominator(510, 4000), 1);
        assert_eq!(DEMO.dct_scale_denominator(2041, 2041), 8);
        assert_eq!(DEMO.dct_scale_denominator(2040, 2040), 4);
        // Resize 180: ceil(359 / 2) = 180, ceil(358 / 2) = 179, ceil(1433 / 8) = 180,
        // ceil(1432 / 8) = 179 but ceil(1432 / 4) = 358.
        let small = Geometry {
            resize: 180,
            crop: 160,
        };
        assert_eq!(small.dct_scale_denominator(359, 4000), 2);
        assert_eq!(small.dct_scale_denominator(358, 4000), 1);
        assert_eq!(small.dct_scale_denominator(1433, 1433), 8);
        assert_eq!(small.dct_scale_denominator(1432, 1432), 4);
    }

    #[test]
    fn crop_bytes_is_a_crop_of_rgb() {
        assert_eq!(DEMO.crop_bytes(), 224 * 224 * 3);
        assert_eq!(
            Geometry {
                resize: 180,
                crop: 160
            }
            .crop_bytes(),
            76_800
        );
    }

    /// metadata.json with these `preprocessing` sizes and a fixed graph `model.fixed.onnx`
    /// declaring `[batch, side, side, 3]`.
    fn metadata(resize: Value, crop: Value, side: Value) -> Value {
        json!({
            "preprocessing": {"resize_shorter_side": resize, "center_crop": crop},
            "graphs": {
                "model.fixed.onnx": {"input": {"name": "image", "shape": ["batch", side, side, 3]}},
                "model.onnx": {"input": {"name": "image", "shape": ["height", "width", 3]}},
            },
        })
    }

    fn read(resize: Value, crop: Value, side: Value) -> Result<Geometry, String> {
        Geometry::from_metadata(&metadata(resize, crop, side), "model.fixed.onnx")
    }

    #[test]
    fn the_sizes_come_from_metadata() {
        assert_eq!(read(json!(256), json!(224), json!(224)), Ok(DEMO));
        assert_eq!(
            read(json!(180), json!(160), json!(160)),
            Ok(Geometry {
                resize: 180,
                crop: 160
            })
        );
        // Equal sizes, and the bound itself, are allowed.
        assert_eq!(
            read(json!(4096), json!(4096), json!(4096)).map(|g| (g.resize, g.crop)),
            Ok((4096, 4096))
        );
        // The any-size graph declares no crop; an entry without a shape declares nothing.
        let any_size = metadata(json!(180), json!(160), json!(224));
        assert!(Geometry::from_metadata(&any_size, "model.onnx").is_ok());
        assert!(Geometry::from_metadata(&any_size, "model.other.onnx").is_ok());
    }

    #[test]
    fn bad_sizes_are_refused_saying_what_would_be_right() {
        let resize_range = "expected a whole number of pixels from 1 to 4096";
        for (resize, crop, expected) in [
            (
                json!(5000),
                json!(224),
                format!(
                    "preprocessing.resize_shorter_side is 5000, more than the largest this service \
                     resizes to (4096); {resize_range}"
                ),
            ),
            (
                json!(0),
                json!(224),
                format!(
                    "preprocessing.resize_shorter_side is 0, not a positive whole number; {resize_range}"
                ),
            ),
            (
                json!(256.5),
                json!(224),
                format!(
                    "preprocessing.resize_shorter_side is 256.5, not a positive whole number; {resize_range}"
                ),
            ),
            (
                json!("256"),
                json!(224),
                format!(
                    "preprocessing.resize_shorter_side is \"256\", not a positive whole number; {resize_range}"
                ),
            ),
            (
                Value::Null,
                json!(224),
                format!("preprocessing.resize_shorter_side is missing; {resize_range}"),
            ),
            (
                json!(256),
                json!(300),
                "preprocessing.center_crop is 300, more than preprocessing.resize_shorter_side (256); \
                 expected a whole number of pixels from 1 to 256"
                    .to_owned(),
            ),
            (
                json!(180),
                json!(-160),
                "preprocessing.center_crop is -160, not a positive whole number; expected a whole \
                 number of pixels from 1 to 180"
                    .to_owned(),
            ),
        ] {
            assert_eq!(read(resize, crop, json!(224)), Err(expected));
        }
        assert_eq!(
            Geometry::from_metadata(&json!({}), "model.fixed.onnx"),
            Err(format!(
                "preprocessing.resize_shorter_side is missing; {resize_range}"
            ))
        );
    }

    #[test]
    fn the_fixed_graphs_declared_crop_must_be_center_crop() {
        assert_eq!(
            read(json!(180), json!(160), json!(224)),
            Err(
                "graphs[\"model.fixed.onnx\"].input.shape is [\"batch\",224,224,3], a crop other \
                 than preprocessing.center_crop (160); expected [\"batch\",160,160,3]"
                    .to_owned()
            )
        );
        let mut lopsided = metadata(json!(256), json!(224), json!(224));
        lopsided["graphs"]["model.fixed.onnx"]["input"]["shape"] = json!([-1, 224, "width", 3]);
        assert_eq!(
            Geometry::from_metadata(&lopsided, "model.fixed.onnx"),
            Err(
                "graphs[\"model.fixed.onnx\"].input.shape is [-1,224,\"width\",3], a crop other than \
                 preprocessing.center_crop (224); expected [-1,224,224,3]"
                    .to_owned()
            )
        );
    }
}

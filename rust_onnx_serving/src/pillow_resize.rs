//! Pillow's antialiased bilinear resize of uint8 RGB pixels, with Pillow's arithmetic, so
//! with Pillow's pixels: the reference (torchvision on a PIL image) resizes with it, and a
//! resizer one level off on some pixels moves this model's probabilities past the fidelity
//! bound (docs/preprocessing.md). The algorithm, as Pillow's libImaging/Resample.c runs it:
//!
//! - the source box arrives as `float`s, and each output pixel's filter taps are computed in
//!   double precision, normalised to sum 1, then rounded to 22-bit fixed point;
//! - a horizontal pass over only the source rows the vertical pass reads, clipped to uint8,
//!   then a vertical pass over that intermediate image, clipped to uint8 again; or, since
//!   Pillow 13, the vertical pass first where the height shrinks much more than the width
//!   (`horizontal_first`), which gives slightly different pixels.
//!
//! Every step below keeps Pillow's order of operations: a different rounding anywhere shows
//! as a one-level difference on some pixels. Only the memory layout differs: the horizontal
//! pass runs on the pixels transposed, so that both passes are one long multiply-add over
//! contiguous bytes, which the compiler vectorises (with AVX2 where the CPU has it); that
//! makes it about 3x faster than filtering pixel by pixel, with the same integer sums.
//! tests/test_parity.py compares the service's answers with the Python service's, whose
//! crops Pillow itself resizes.

use crate::decode::RgbPixels;

/// Fixed-point bits of the filter taps: 8 bits of pixel, 2 of headroom, in an i32.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Half of one output level, added before the final shift: round to nearest.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's bilinear (triangle) filter; its support is 1 source pixel at scale 1.
fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// An accumulated fixed-point sum back to uint8: Pillow's `clip8`.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One axis's filter: for each output pixel, the first source pixel it reads and its taps.
struct AxisFilter {
    first: Vec<usize>,
    /// `taps_per_output` fixed-point weights per output pixel, zero past its own count.
    weights: Vec<i32>,
    counts: Vec<usize>,
    taps_per_output: usize,
}

impl AxisFilter {
    /// Pillow's `precompute_coeffs` and `normalize_coeffs_8bpc` for `in_size` source pixels,
    /// of which `start..end` (Pillow's float box) become `out_size` output pixels.
    fn new(in_size: usize, start: f32, end: f32, out_size: usize) -> Self {
        // NOTE: the box's width is a float subtraction, as in Pillow, then widened.
        let scale = f64::from(end - start) / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the bilinear filter's support, 1.0, times the scale
        let inverse_scale = 1.0 / filter_scale;
        let taps_per_output = support.ceil() as usize * 2 + 1;
        let mut filter = Self {
            first: Vec::with_capacity(out_size),
            weights: vec![0; out_size * taps_per_output],
            counts: Vec::with_capacity(out_size),
            taps_per_output,
        };
        let mut taps = Vec::with_capacity(taps_per_output);
        for (out, weights) in filter.weights.chunks_exact_mut(taps_per_output).enumerate() {
            let center = f64::from(start) + (out as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; so does `as`.
            let first = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(in_size as i64);
            taps.clear();
            taps.extend((first..end).map(|x| bilinear((x as f64 - center + 0.5) * inverse_scale)));
            let total: f64 = taps.iter().sum();
            for (weight, tap) in weights.iter_mut().zip(&taps) {
                let tap = if total == 0.0 { *tap } else { tap / total };
                let fixed = tap * f64::from(1u32 << PRECISION_BITS);
                *weight = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            filter.first.push(first as usize);
            filter.counts.push(taps.len());
        }
        filter
    }

    /// Output pixel `out`'s first source pixel and fixed-point weights.
    #[inline(always)]
    fn taps(&self, out: usize) -> (usize, &[i32]) {
        let weights = &self.weights[out * self.taps_per_output..][..self.counts[out]];
        (self.first[out], weights)
    }

    /// The source pixels any output pixel reads: first..end.
    fn span(&self) -> (usize, usize) {
        let last = self.first.len() - 1;
        (self.first[0], self.first[last] + self.counts[last])
    }
}

/// Buffers kept between calls: the region transposed, the first pass's output, the same
/// transposed back, and one line of fixed-point sums.
#[derive(Default)]
pub struct Buffers {
    columns: Vec<u8>,
    filtered: Vec<u8>,
    rows: Vec<u8>,
    sums: Vec<i32>,
}

/// The region `(left, top, right, bottom)` of `image` resized to `out_width` x `out_height`
/// into `out` (row-major RGB), as Pillow's `Image.resize((out_width, out_height), BILINEAR,
/// box=region)` does.
pub fn resize_region(
    image: &RgbPixels,
    region: [f64; 4],
    out_size: (usize, usize),
    out: &mut [u8],
    buffers: &mut Buffers,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2, checked just above.
        return unsafe { resize_region_avx2(image, region, out_size, out, buffers) };
    }
    resize_region_any_cpu(image, region, out_size, out, buffers)
}

/// The same code, compiled for AVX2: 8 sums per instruction instead of SSE2's 4, and a
/// 32-bit multiply that SSE2 lacks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resize_region_avx2(
    image: &RgbPixels,
    region: [f64; 4],
    out_size: (usize, usize),
    out: &mut [u8],
    buffers: &mut Buffers,
) {
    resize_region_any_cpu(image, region, out_size, out, buffers)
}

/// Pillow 13's choice of the first pass, from the whole image's size and the output's: the
/// vertical one when the height shrinks by more than twice as many pixels as the width.
fn horizontal_first((width, height): (usize, usize), (out_width, out_height): (usize, usize)) -> bool {
    let shrink = |from: usize, to: usize| from as i64 - to as i64;
    let vertical_shrink = shrink(height, out_height);
    !(vertical_shrink > 0 && vertical_shrink > shrink(width, out_width) * 2)
}

/// Inlined into each caller, so it is compiled for each caller's CPU features.
#[inline(always)]
fn resize_region_any_cpu(
    image: &RgbPixels,
    region: [f64; 4],
    (out_width, out_height): (usize, usize),
    out: &mut [u8],
    buffers: &mut Buffers,
) {
    // Pillow takes the box as C floats.
    let [left, top, right, bottom] = region.map(|v| v as f32);
    let (width, height) = (image.width as usize, image.height as usize);
    let horizontal = AxisFilter::new(width, left, right, out_width);
    let vertical = AxisFilter::new(height, top, bottom, out_height);
    // Only the source pixels some output pixel reads.
    let (first_row, end_row) = vertical.span();
    let (first_column, end_column) = horizontal.span();
    let (row_count, column_count) = (end_row - first_row, end_column - first_column);
    let out = &mut out[..out_width * out_height * 3];
    let Buffers {
        columns,
        filtered,
        rows,
        sums,
    } = buffers;
    // Source row y, the columns read: line y of `source`.
    let source = Lines {
        data: &image.data,
        stride: width * 3,
        start: first_column * 3,
        bytes: column_count * 3,
    };
    if horizontal_first((width, height), (out_width, out_height)) {
        let region = Lines {
            start: source.start + first_row * source.stride,
            ..source
        };
        columns.resize(column_count * row_count * 3, 0);
        transpose(region, row_count, columns);
        filtered.resize(out_width * row_count * 3, 0);
        filter(
            Lines::packed(columns, row_count * 3),
            &horizontal,
            first_column,
            filtered,
            sums,
        );
        // Back to rows: Pillow's intermediate image, the rows the vertical pass reads.
        rows.resize(filtered.len(), 0);
        transpose(Lines::packed(filtered, row_count * 3), out_width, rows);
        filter(
            Lines::packed(rows, out_width * 3),
            &vertical,
            first_row,
            out,
            sums,
        );
    } else {
        filtered.resize(out_height * column_count * 3, 0);
        filter(source, &vertical, 0, filtered, sums);
        columns.resize(filtered.len(), 0);
        transpose(Lines::packed(filtered, column_count * 3), out_height, columns);
        rows.resize(out.len(), 0);
        filter(
            Lines::packed(columns, out_height * 3),
            &horizontal,
            first_column,
            rows,
            sums,
        );
        transpose(Lines::packed(rows, out_height * 3), out_width, out);
    }
}

/// Equally spaced lines of RGB pixels in a buffer: line i is `data[i * stride + start..]`,
/// `bytes` long.
#[derive(Clone, Copy)]
struct Lines<'a> {
    data: &'a [u8],
    stride: usize,
    start: usize,
    bytes: usize,
}

impl<'a> Lines<'a> {
    /// Lines of `bytes` each, one after the other.
    fn packed(data: &'a [u8], bytes: usize) -> Self {
        Self {
            data,
            stride: bytes,
            start: 0,
            bytes,
        }
    }

    #[inline(always)]
    fn line(&self, index: usize) -> &'a [u8] {
        &self.data[index * self.stride + self.start..][..self.bytes]
    }
}

/// The first `count` of `lines`, transposed into `out`: pixel j of line i becomes pixel i of
/// line j (`count` pixels long).
#[inline(always)]
fn transpose(lines: Lines, count: usize, out: &mut [u8]) {
    let out_line_bytes = count * 3;
    for index in 0..count {
        for (pixel_index, pixel) in lines.line(index).chunks_exact(3).enumerate() {
            out[pixel_index * out_line_bytes + index * 3..][..3].copy_from_slice(pixel);
        }
    }
}

/// One pass of the filter: output line i (of `out`, `lines.bytes` long each) is the sum of
/// `filter.taps(i)`'s weights times input lines, clipped; line 0 of `lines` is source pixel
/// `first_line` of the filter's axis.
#[inline(always)]
fn filter(lines: Lines, filter: &AxisFilter, first_line: usize, out: &mut [u8], sums: &mut Vec<i32>) {
    sums.resize(lines.bytes, 0);
    for (index, out_line) in out.chunks_exact_mut(lines.bytes).enumerate() {
        let (first, weights) = filter.taps(index);
        sums.fill(HALF);
        for (tap, &weight) in weights.iter().enumerate() {
            // Channels and pixels alike: one long loop the compiler vectorises.
            for (sum, &value) in sums.iter_mut().zip(lines.line(first - first_line + tap)) {
                *sum += i32::from(value) * weight;
            }
        }
        for (value, &sum) in out_line.iter_mut().zip(sums.iter()) {
            *value = clip8(sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(image: &RgbPixels, region: [f64; 4], out: (usize, usize)) -> Vec<u8> {
        let mut result = vec![0; out.0 * out.1 * 3];
        resize_region(image, region, out, &mut result, &mut Buffers::default());
        result
    }

    /// A 9x5 image whose channels are `(x * 29 + y * 53) % 256`, `(x * y * 7) % 256` and
    /// `255 - x * 25`.
    fn pattern() -> RgbPixels {
        let mut data = Vec::new();
        for y in 0..5u32 {
            for x in 0..9u32 {
                data.extend([
                    ((x * 29 + y * 53) % 256) as u8,
                    ((x * y * 7) % 256) as u8,
                    (255 - x * 25) as u8,
                ]);
            }
        }
        RgbPixels {
            width: 9,
            height: 5,
            data,
        }
    }

    /// A region, the output size, and Pillow's pixels for them.
    type Case = ([f64; 4], (usize, usize), &'static [u8]);

    /// Pillow 13's own pixels (`np.asarray(Image.fromarray(pattern).resize(size,
    /// Image.Resampling.BILINEAR, box=region))`): shrinking, enlarging, a fractional box
    /// clipped at the border.
    #[test]
    fn pixels_are_pillows() {
        #[rustfmt::skip]
        let cases: [Case; 3] = [
            ([0.0, 0.0, 9.0, 5.0], (4, 2), &PILLOW_SHRINK),
            ([1.25, 0.5, 7.75, 4.5], (5, 3), &PILLOW_BOX),
            ([2.0, 1.0, 5.0, 3.0], (7, 4), &PILLOW_ENLARGE),
        ];
        for (region, out, expected) in cases {
            assert_eq!(resize(&pattern(), region, out), expected, "{region:?} -> {out:?}");
        }
    }

    #[rustfmt::skip]
    const PILLOW_SHRINK: [u8; 24] = [
        77, 6, 234, 133, 20, 184, 164, 36, 126, 107, 50, 76,
        167, 17, 234, 141, 60, 184, 104, 108, 126, 113, 151, 76,
    ];
    #[rustfmt::skip]
    const PILLOW_BOX: [u8; 45] = [
        74, 6, 219, 108, 11, 189, 148, 17, 155, 188, 23, 121, 135, 28, 91,
        148, 20, 219, 182, 37, 189, 186, 56, 155, 155, 75, 121, 59, 92, 91,
        177, 34, 219, 154, 63, 189, 64, 95, 155, 80, 128, 121, 114, 156, 91,
    ];
    #[rustfmt::skip]
    const PILLOW_ENLARGE: [u8; 84] = [
        90, 9, 212, 102, 11, 201, 115, 14, 191, 127, 16, 180, 139, 18, 169, 152, 20, 159, 164, 23, 148,
        116, 15, 212, 128, 19, 201, 141, 23, 191, 153, 26, 180, 165, 30, 169, 178, 34, 159, 190, 38, 148,
        143, 21, 212, 155, 26, 201, 168, 32, 191, 180, 37, 180, 192, 42, 169, 205, 47, 159, 217, 53, 148,
        169, 27, 212, 181, 34, 201, 194, 41, 191, 206, 47, 180, 191, 54, 169, 176, 61, 159, 179, 68, 148,
    ];

    /// Taller than wide, shrunk mostly in height: Pillow 13 filters vertically first, which
    /// gives 3 of these 36 values one level away from filtering horizontally first.
    #[test]
    fn tall_images_are_filtered_vertically_first_as_pillow_does() {
        let mut data = Vec::new();
        for y in 0..12u32 {
            for x in 0..5u32 {
                data.extend([
                    ((x * 61 + y * 37) % 256) as u8,
                    ((x * y * 11 + y * y * 5) % 256) as u8,
                    ((y * 19 + x * x * 13) % 256) as u8,
                ]);
            }
        }
        let tall = RgbPixels {
            width: 5,
            height: 12,
            data,
        };
        assert!(!horizontal_first((5, 12), (4, 3)));
        #[rustfmt::skip]
        let pillow = [
            120, 51, 52, 153, 77, 78, 120, 96, 130, 91, 95, 149,
            136, 153, 114, 110, 157, 140, 112, 141, 181, 154, 117, 131,
            106, 163, 175, 148, 161, 187, 132, 147, 132, 100, 120, 96,
        ];
        assert_eq!(resize(&tall, [0.5, 1.25, 4.5, 11.0], (4, 3)), pillow);
    }

    #[test]
    fn a_uniform_image_stays_uniform() {
        let data = [200u8, 17, 99].repeat(1200 * 727);
        let image = RgbPixels {
            width: 1200,
            height: 727,
            data,
        };
        let crop = resize(&image, [281.5, 45.4, 918.5, 681.6], (224, 224));
        assert!(crop.chunks(3).all(|p| p == [200, 17, 99]));
    }

    /// At scale 1 on whole pixels, each output pixel is one source pixel: a plain crop.
    #[test]
    fn at_scale_one_the_resize_is_a_crop() {
        let source = pattern();
        let crop = resize(&source, [2.0, 1.0, 7.0, 4.0], (5, 3));
        for (y, x) in [(0, 0), (2, 4), (1, 3)] {
            let at = ((y + 1) * 9 + x + 2) * 3;
            assert_eq!(crop[(y * 5 + x) * 3..][..3], source.data[at..at + 3]);
        }
    }
}

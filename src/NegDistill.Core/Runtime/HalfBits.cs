namespace NegDistill.Runtime;

/// <summary>Widening and narrowing of 16-bit floats held as raw words. Integer-only so that ILGPU
/// kernels (CPU accelerator and PTX) and the CPU twin widen identically; widening is exact.</summary>
public static class HalfBits
{
    public static float Bf16ToFloat(ushort b) => BitConverter.Int32BitsToSingle(b << 16);

    /// <summary>IEEE binary16 → binary32, exact (subnormals, infinities and NaN included).</summary>
    public static float F16ToFloat(ushort h)
    {
        int sign = (h & 0x8000) << 16;
        int exp = (h >> 10) & 0x1F;
        int mant = h & 0x3FF;
        int bits;
        if (exp == 0x1F) bits = sign | 0x7F800000 | (mant << 13);
        else if (exp != 0) bits = sign | ((exp + 112) << 23) | (mant << 13);
        else if (mant == 0) bits = sign;
        else
        {
            // subnormal: normalise the mantissa
            int e = 113;
            while ((mant & 0x400) == 0) { mant <<= 1; e--; }
            bits = sign | (e << 23) | ((mant & 0x3FF) << 13);
        }
        return BitConverter.Int32BitsToSingle(bits);
    }

    public static float Widen(ushort w, bool bf16) => bf16 ? Bf16ToFloat(w) : F16ToFloat(w);

    /// <summary>binary32 → bfloat16 with round-to-nearest-even; NaN stays NaN.</summary>
    public static ushort FloatToBf16(float f)
    {
        uint u = (uint)BitConverter.SingleToInt32Bits(f);
        if ((u & 0x7FFFFFFF) > 0x7F800000) return (ushort)((u >> 16) | 0x40);
        u += 0x7FFF + ((u >> 16) & 1);
        return (ushort)(u >> 16);
    }

    /// <summary>binary32 → binary16 with round-to-nearest-even (as the (Half) cast): overflow to ±Inf,
    /// gradual underflow to subnormals, NaN stays NaN. Integer-only, so kernels narrow identically.</summary>
    public static ushort FloatToF16(float f)
    {
        uint u = (uint)BitConverter.SingleToInt32Bits(f);
        uint sign = (u >> 16) & 0x8000;
        uint a = u & 0x7FFFFFFF;
        if (a > 0x7F800000) return (ushort)(sign | 0x7E00 | ((a >> 13) & 0x1FF));  // NaN, quiet, payload kept
        if (a >= 0x477FF000) return (ushort)(sign | 0x7C00);                          // ≥ 65520: rounds to Inf
        if (a >= 0x38800000)                                                           // normal half
        {
            uint r = a - 0x38000000;                                                   // rebias 127 → 15
            r += 0xFFF + ((r >> 13) & 1);
            return (ushort)(sign | (r >> 13));
        }
        if (a < 0x33000000) return (ushort)sign;                                       // < 2^-25: rounds to ±0
        int e = (int)(a >> 23);                                                        // subnormal half
        uint m = (a & 0x7FFFFF) | 0x800000;
        int shift = 126 - e;                                                           // 14..24
        uint half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1) != 0)) half++;
        return (ushort)(sign | half);
    }

    public static ushort Narrow(float f, bool bf16) => bf16 ? FloatToBf16(f) : FloatToF16(f);
}

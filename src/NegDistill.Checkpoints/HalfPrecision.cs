using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace NegDistill.Checkpoints;

/// <summary>
/// Conversions between float and the 16-bit storage kinds, on raw bit patterns; the one implementation
/// used by the checkpoint files, the CPU twin and the ILGPU kernels (integer-only both ways, so the
/// kernels on any accelerator and the CPU convert identically; widening is exact).
/// F16 narrows with IEEE round-to-nearest-even, bit for bit what the <see cref="System.Half"/> cast gives
/// (tested), written without it because kernels cannot call it. BF16 keeps the upper 16 bits of the
/// binary32 pattern, rounding the dropped half to nearest, ties to even; NaN stays NaN (it is made quiet so the
/// truncated mantissa cannot become zero, which would read back as infinity).
/// </summary>
public static class HalfPrecision
{
    public static ushort SingleToBFloat16(float value)
    {
        uint bits = (uint)BitConverter.SingleToInt32Bits(value);   // (SingleToUInt32Bits is not an ILGPU intrinsic)
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u)
        {
            // NaN: keep sign and top payload bits, force the quiet bit.
            return (ushort)((bits >> 16) | 0x0040u);
        }
        // Adding 0x7FFF plus the lowest kept bit rounds the dropped half to nearest, ties to even.
        // A carry out of the mantissa correctly bumps the exponent (up to infinity for the largest values).
        uint lowestKept = (bits >> 16) & 1u;
        return (ushort)((bits + 0x7FFFu + lowestKept) >> 16);
    }

    public static float BFloat16ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>binary32 → binary16, round-to-nearest-even: overflow to ±Inf, gradual underflow to subnormals,
    /// NaN stays NaN (quiet, top payload bits kept).</summary>
    public static ushort SingleToHalf(float value)
    {
        uint u = (uint)BitConverter.SingleToInt32Bits(value);
        uint sign = (u >> 16) & 0x8000;
        uint a = u & 0x7FFFFFFF;
        if (a > 0x7F800000) return (ushort)(sign | 0x7E00 | ((a >> 13) & 0x1FF));  // NaN
        if (a >= 0x477FF000) return (ushort)(sign | 0x7C00);                          // ≥ 65520 rounds to Inf
        if (a >= 0x38800000)                                                           // a normal half
        {
            uint r = a - 0x38000000;                                                   // exponent bias 127 → 15
            r += 0xFFF + ((r >> 13) & 1);
            return (ushort)(sign | (r >> 13));
        }
        if (a < 0x33000000) return (ushort)sign;                                       // below 2^-25: ±0
        int e = (int)(a >> 23);                                                        // a subnormal half
        uint m = (a & 0x7FFFFF) | 0x800000;
        int shift = 126 - e;                                                           // 14..24
        uint half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1) != 0)) half++;
        return (ushort)(sign | half);
    }

    /// <summary>IEEE binary16 → binary32, exact (subnormals, infinities and NaN payloads included).</summary>
    public static float HalfToSingle(ushort h)
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

    /// <summary>A 16-bit word widened: bfloat16 when <paramref name="bf16"/>, else binary16.</summary>
    public static float Widen(ushort w, bool bf16) => bf16 ? BFloat16ToSingle(w) : HalfToSingle(w);

    public static ushort Narrow(float f, bool bf16) => bf16 ? SingleToBFloat16(f) : SingleToHalf(f);

    public static void SingleToBFloat16(ReadOnlySpan<float> source, Span<ushort> destination) => Map(source, destination, SingleToBFloat16);
    public static void BFloat16ToSingle(ReadOnlySpan<ushort> source, Span<float> destination) => Map(source, destination, BFloat16ToSingle);
    public static void SingleToHalf(ReadOnlySpan<float> source, Span<ushort> destination) => Map(source, destination, SingleToHalf);
    public static void HalfToSingle(ReadOnlySpan<ushort> source, Span<float> destination) => Map(source, destination, HalfToSingle);

    /// <summary>Element-wise conversion of spans of equal length (the checkpoint codecs use the scalar forms inline).</summary>
    static void Map<TIn, TOut>(ReadOnlySpan<TIn> source, Span<TOut> destination, Func<TIn, TOut> convert)
    {
        if (source.Length != destination.Length)
            throw new ArgumentException($"source has {source.Length} elements but destination has {destination.Length}");
        for (int i = 0; i < source.Length; i++) destination[i] = convert(source[i]);
    }
}

/// <summary>Decoding and encoding of little-endian element bytes, shared by the tensor and file types.</summary>
internal static class ElementCodec
{
    /// <summary>Decodes <paramref name="source"/> (raw little-endian elements of <paramref name="type"/>) into floats.</summary>
    public static void DecodeToFloat32(StorageType type, ReadOnlySpan<byte> source, Span<float> destination)
    {
        int size = type.ElementSize();
        if (source.Length != destination.Length * size)
            throw new ArgumentException($"{source.Length} bytes of {type.DtypeName()} do not hold {destination.Length} elements");
        switch (type)
        {
            case StorageType.F32:
                if (BitConverter.IsLittleEndian)
                    source.CopyTo(MemoryMarshal.AsBytes(destination));
                else
                    for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadSingleLittleEndian(source[(4 * i)..]);
                break;
            case StorageType.F16:
                for (int i = 0; i < destination.Length; i++) destination[i] = HalfPrecision.HalfToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                break;
            case StorageType.BF16:
                for (int i = 0; i < destination.Length; i++) destination[i] = HalfPrecision.BFloat16ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                break;
            case StorageType.F64:
                for (int i = 0; i < destination.Length; i++) destination[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(source[(8 * i)..]);
                break;
            case StorageType.I32:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt32LittleEndian(source[(4 * i)..]);
                break;
            case StorageType.I64:
                for (int i = 0; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt64LittleEndian(source[(8 * i)..]);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type), type, "unknown storage type");
        }
    }

    /// <summary>Encodes floats as raw little-endian elements of a floating-point <paramref name="type"/>.</summary>
    public static void EncodeFromFloat32(StorageType type, ReadOnlySpan<float> source, Span<byte> destination)
    {
        int size = type.ElementSize();
        if (destination.Length != source.Length * size)
            throw new ArgumentException($"{destination.Length} bytes of {type.DtypeName()} do not hold {source.Length} elements");
        switch (type)
        {
            case StorageType.F32:
                if (BitConverter.IsLittleEndian)
                    MemoryMarshal.AsBytes(source).CopyTo(destination);
                else
                    for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(destination[(4 * i)..], source[i]);
                break;
            case StorageType.F16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], HalfPrecision.SingleToHalf(source[i]));
                break;
            case StorageType.BF16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], HalfPrecision.SingleToBFloat16(source[i]));
                break;
            case StorageType.F64:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(destination[(8 * i)..], source[i]);
                break;
            default:
                throw new ArgumentException($"cannot store floats as {type.DtypeName()}; use F32, F16, BF16 or F64", nameof(type));
        }
    }
}

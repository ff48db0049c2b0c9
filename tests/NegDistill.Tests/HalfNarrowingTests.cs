using NegDistill.Checkpoints;

namespace NegDistill.Tests;

/// <summary>The integer-only 16-bit narrowing (used by kernels and the twin) against .NET's own
/// conversions: exact on every tested value, including ties, subnormals, overflow and NaN.</summary>
[TestFixture]
public class HalfNarrowingTests
{
    static IEnumerable<float> Values()
    {
        float[] edge = [0f, -0f, 1f, -1f, 65504f, 65519.99f, 65520f, 1e6f, float.PositiveInfinity, float.NegativeInfinity,
            6.1035156e-5f, 6.0975552e-5f, 5.9604645e-8f, 2.9802322e-8f, 2.9802326e-8f, 1e-10f, float.Epsilon, 1.0009765625f, 1.00048828125f,
            1.000732421875f, 2049f, 2051f, 0.1f, 3.14159265f];
        foreach (var v in edge) yield return v;
        var rng = new Random(7);
        for (int i = 0; i < 200_000; i++)
        {
            // random bit patterns over the half range and beyond, and exact ties (13 low bits = 0x1000)
            int bits = rng.Next(0x30000000, 0x48000000) | (rng.Next(2) << 31);
            if (i % 4 == 0) bits = (bits & ~0x1FFF) | 0x1000;
            yield return BitConverter.Int32BitsToSingle(bits);
        }
    }

    [Test]
    public void FloatToF16_EqualsTheHalfCast()
    {
        foreach (float f in Values())
            Assert.That(HalfPrecision.SingleToHalf(f), Is.EqualTo(BitConverter.HalfToUInt16Bits((Half)f)), $"{f:R} (0x{BitConverter.SingleToInt32Bits(f):X8})");
        Assert.That(float.IsNaN(HalfPrecision.HalfToSingle(HalfPrecision.SingleToHalf(float.NaN))), Is.True);
    }

    [Test]
    public void FloatToBf16_RoundsToNearestEven()
    {
        foreach (float f in Values())
        {
            // reference: the nearer of the two bf16 neighbours, ties to the even one
            uint u = (uint)BitConverter.SingleToInt32Bits(f);
            uint lo = u & 0xFFFF0000, hi = lo + 0x10000;
            double dl = Math.Abs(f - (double)BitConverter.Int32BitsToSingle((int)lo));
            double dh = Math.Abs((double)BitConverter.Int32BitsToSingle((int)hi) - f);
            uint want = dl < dh || (dl == dh && ((lo >> 16) & 1) == 0) ? lo : hi;
            if (float.IsInfinity(f)) want = u;
            Assert.That(HalfPrecision.SingleToBFloat16(f), Is.EqualTo((ushort)(want >> 16)), $"{f:R}");
        }
        Assert.That(float.IsNaN(HalfPrecision.BFloat16ToSingle(HalfPrecision.SingleToBFloat16(float.NaN))), Is.True);
    }
}

namespace NegDistill.Checkpoints.Tests;

public class HalfPrecisionTests
{
    /// <summary>
    /// Reference rounding for BF16 worked out from values rather than bit tricks: of the two BF16 neighbours of x
    /// (truncated toward zero, and one unit further out), take the nearer; on a tie the one whose last bit is 0.
    /// The unit beyond the largest finite BF16 is infinity, whose value for the distance is 2^128.
    /// </summary>
    private static ushort ReferenceBf16(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        if (float.IsInfinity(x)) return (ushort)(bits >> 16);
        ushort lo = (ushort)(bits >> 16);
        ushort hi = (ushort)(lo + 1);
        double ax = Math.Abs((double)x);
        double vlo = Math.Abs((double)BitConverter.UInt32BitsToSingle((uint)lo << 16));
        double vhi = (hi & 0x7FFF) == 0x7F80 ? Math.Pow(2, 128) : Math.Abs((double)BitConverter.UInt32BitsToSingle((uint)hi << 16));
        double dlo = ax - vlo, dhi = vhi - ax;
        if (dlo < dhi) return lo;
        if (dhi < dlo) return hi;
        return (lo & 1) == 0 ? lo : hi;
    }

    [Test]
    public void Bf16NarrowingMatchesRoundToNearestEvenOnRandomAndEdgeBitPatterns()
    {
        var rng = new Random(1234);
        var patterns = new List<uint>();
        for (int i = 0; i < 200_000; i++) patterns.Add((uint)rng.NextInt64(0, 1L << 32));
        // Exact ties and near-ties in every binade, plus subnormals and the overflow boundary.
        foreach (uint hiBits in new uint[] { 0x0000, 0x0001, 0x007F, 0x0080, 0x3F80, 0x3F81, 0x7F7E, 0x7F7F, 0x8001, 0xBF80, 0xFF7F })
        foreach (uint low in new uint[] { 0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF })
            patterns.Add(hiBits << 16 | low);

        foreach (uint p in patterns)
        {
            float x = BitConverter.UInt32BitsToSingle(p);
            ushort actual = HalfPrecision.SingleToBFloat16(x);
            if (float.IsNaN(x))
            {
                Assert.That(float.IsNaN(HalfPrecision.BFloat16ToSingle(actual)), $"NaN 0x{p:X8} must stay NaN, got 0x{actual:X4}");
                Assert.That(actual >> 15, Is.EqualTo(p >> 31), $"NaN 0x{p:X8} must keep its sign");
                continue;
            }
            Assert.That(actual, Is.EqualTo(ReferenceBf16(x)), $"float bits 0x{p:X8}");
        }
    }

    [TestCase(0x3F808000u, (ushort)0x3F80, TestName = "Bf16 tie rounds down to even")]
    [TestCase(0x3F818000u, (ushort)0x3F82, TestName = "Bf16 tie rounds up to even")]
    [TestCase(0x3F808001u, (ushort)0x3F81, TestName = "Bf16 just above a tie rounds up")]
    [TestCase(0x3F807FFFu, (ushort)0x3F80, TestName = "Bf16 just below a tie rounds down")]
    [TestCase(0x7F7FFFFFu, (ushort)0x7F80, TestName = "Bf16 float.MaxValue rounds to infinity")]
    [TestCase(0x7F800000u, (ushort)0x7F80, TestName = "Bf16 +infinity")]
    [TestCase(0xFF800000u, (ushort)0xFF80, TestName = "Bf16 -infinity")]
    [TestCase(0x80000000u, (ushort)0x8000, TestName = "Bf16 negative zero keeps its sign")]
    [TestCase(0x00000001u, (ushort)0x0000, TestName = "Bf16 smallest subnormal rounds to zero")]
    [TestCase(0x00018000u, (ushort)0x0002, TestName = "Bf16 subnormal tie rounds to even")]
    [TestCase(0x80008001u, (ushort)0x8001, TestName = "Bf16 negative subnormal above tie rounds away")]
    public void Bf16KnownValues(uint floatBits, ushort expected)
    {
        Assert.That(HalfPrecision.SingleToBFloat16(BitConverter.UInt32BitsToSingle(floatBits)), Is.EqualTo(expected));
    }

    [Test]
    public void Bf16SignallingNaNWithPayloadOnlyInLowBitsStaysNaN()
    {
        // Truncating 0x7F800001 would give 0x7F80, which is infinity.
        float snan = BitConverter.UInt32BitsToSingle(0x7F800001u);
        ushort b = HalfPrecision.SingleToBFloat16(snan);
        Assert.That(b & 0x7F80, Is.EqualTo(0x7F80));
        Assert.That(b & 0x007F, Is.Not.Zero);
        Assert.That(float.IsNaN(HalfPrecision.BFloat16ToSingle(b)));
        Assert.That(HalfPrecision.SingleToBFloat16(BitConverter.UInt32BitsToSingle(0xFF800001u)) >> 15, Is.EqualTo(1));
    }

    [Test]
    public void EveryBf16PatternWidensExactlyAndNarrowsBack()
    {
        for (int i = 0; i <= ushort.MaxValue; i++)
        {
            ushort b = (ushort)i;
            float f = HalfPrecision.BFloat16ToSingle(b);
            Assert.That(BitConverter.SingleToUInt32Bits(f), Is.EqualTo((uint)b << 16));
            if (float.IsNaN(f))
                Assert.That(float.IsNaN(HalfPrecision.BFloat16ToSingle(HalfPrecision.SingleToBFloat16(f))));
            else
                Assert.That(HalfPrecision.SingleToBFloat16(f), Is.EqualTo(b), $"0x{b:X4}");
        }
    }

    [Test]
    public void EveryF16PatternMatchesSystemHalfAndNarrowsBack()
    {
        for (int i = 0; i <= ushort.MaxValue; i++)
        {
            ushort h = (ushort)i;
            float f = HalfPrecision.HalfToSingle(h);
            float expected = (float)BitConverter.UInt16BitsToHalf(h);
            if (float.IsNaN(expected))
            {
                Assert.That(float.IsNaN(f));
                Assert.That(float.IsNaN(HalfPrecision.HalfToSingle(HalfPrecision.SingleToHalf(f))));
                continue;
            }
            Assert.That(BitConverter.SingleToUInt32Bits(f), Is.EqualTo(BitConverter.SingleToUInt32Bits(expected)), $"0x{h:X4}");
            Assert.That(HalfPrecision.SingleToHalf(f), Is.EqualTo(h), $"0x{h:X4}");
        }
    }

    [Test]
    public void F16NarrowingMatchesSystemHalfOnRandomFloats()
    {
        var rng = new Random(99);
        for (int i = 0; i < 200_000; i++)
        {
            float x = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
            ushort expected = BitConverter.HalfToUInt16Bits((Half)x);
            Assert.That(HalfPrecision.SingleToHalf(x), Is.EqualTo(expected), $"0x{BitConverter.SingleToUInt32Bits(x):X8}");
        }
    }

    [TestCase(65504f, (ushort)0x7BFF, TestName = "F16 largest finite")]
    [TestCase(65519f, (ushort)0x7BFF, TestName = "F16 just below overflow tie")]
    [TestCase(65520f, (ushort)0x7C00, TestName = "F16 overflow tie rounds to infinity")]
    [TestCase(1f / 16777216f, (ushort)0x0001, TestName = "F16 smallest subnormal 2^-24")]
    [TestCase(1f / 33554432f, (ushort)0x0000, TestName = "F16 2^-25 ties to even zero")]
    [TestCase(3f / 33554432f, (ushort)0x0002, TestName = "F16 3*2^-25 ties to even 2")]
    [TestCase(-0f, (ushort)0x8000, TestName = "F16 negative zero")]
    [TestCase(float.NegativeInfinity, (ushort)0xFC00, TestName = "F16 -infinity")]
    [TestCase(0.33333334f, (ushort)0x3555, TestName = "F16 one third")]
    public void F16KnownValues(float value, ushort expected)
    {
        Assert.That(HalfPrecision.SingleToHalf(value), Is.EqualTo(expected));
    }

    [Test]
    public void SpanConversionsAgreeWithScalarOnesAndCheckLengths()
    {
        float[] src = [1.5f, -0f, float.NaN, 1e-40f, 70000f];
        var bf = new ushort[5];
        var h = new ushort[5];
        HalfPrecision.SingleToBFloat16(src, bf);
        HalfPrecision.SingleToHalf(src, h);
        for (int i = 0; i < src.Length; i++)
        {
            Assert.That(bf[i], Is.EqualTo(HalfPrecision.SingleToBFloat16(src[i])));
            Assert.That(h[i], Is.EqualTo(HalfPrecision.SingleToHalf(src[i])));
        }
        var back = new float[5];
        HalfPrecision.BFloat16ToSingle(bf, back);
        Assert.That(back[0], Is.EqualTo(1.5f));
        HalfPrecision.HalfToSingle(h, back);
        Assert.That(back[4], Is.EqualTo(float.PositiveInfinity));
        Assert.Throws<ArgumentException>(() => HalfPrecision.SingleToHalf(src, new ushort[4]));
    }
}

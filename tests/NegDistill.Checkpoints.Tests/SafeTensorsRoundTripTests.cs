using System.Buffers.Binary;

namespace NegDistill.Checkpoints.Tests;

public class SafeTensorsRoundTripTests : TempDirTest
{
    private static readonly float[] Specials =
    [
        0f, -0f, 1f, -1.5f, 3.14159265f, float.MaxValue, float.MinValue, float.Epsilon, 1e-40f, -1e-40f,
        6.1e-5f, 65504f, 65520f, 1e30f, float.PositiveInfinity, float.NegativeInfinity, float.NaN,
        BitConverter.UInt32BitsToSingle(0x7F800001u), BitConverter.UInt32BitsToSingle(0xFFC12345u), 1.00390625f, 1.01171875f,
    ];

    [TestCase(StorageType.F32)]
    [TestCase(StorageType.F16)]
    [TestCase(StorageType.BF16)]
    [TestCase(StorageType.F64)]
    public void FloatKindsRoundTripThroughAFile(StorageType type)
    {
        string path = PathIn("t.safetensors");
        var values = Specials.Concat(Iota(43, 0.37f)).ToArray(); // 64 values
        var tensor = StoredTensor.FromFloat32("w", [4, 16], values, type);
        SafeTensors.Write(path, [tensor]);

        using var file = SafeTensors.Open(path);
        var info = file.Info("w");
        Assert.That(info.Type, Is.EqualTo(type));
        Assert.That(info.Shape, Is.EqualTo(new long[] { 4, 16 }));
        var back = file.Read("w");
        Assert.That(back.Data, Is.EqualTo(tensor.Data), "stored bytes must come back unchanged");

        float[] floats = file.ReadFloat32("w");
        for (int i = 0; i < values.Length; i++)
        {
            float expected = type switch
            {
                StorageType.F32 => values[i],
                StorageType.F16 => (float)(Half)values[i],
                StorageType.BF16 => HalfPrecision.BFloat16ToSingle(HalfPrecision.SingleToBFloat16(values[i])),
                _ => (float)(double)values[i],
            };
            if (float.IsNaN(expected))
                Assert.That(float.IsNaN(floats[i]), $"element {i} must stay NaN");
            else
                Assert.That(BitConverter.SingleToInt32Bits(floats[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(expected)), $"element {i} ({values[i]:R})");
        }
        if (type == StorageType.F32)
            Assert.That(Bits(floats), Is.EqualTo(Bits(values)), "F32 must be bit-identical, NaN payloads included");
    }

    [TestCase(StorageType.F16)]
    [TestCase(StorageType.BF16)]
    public void EverySixteenBitPatternIsStoredBitForBit(StorageType type)
    {
        string path = PathIn("raw16.safetensors");
        var words = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        SafeTensors.Write(path, [StoredTensor.FromRaw16("all", type, [256, 256], words)]);
        using var file = SafeTensors.Open(path);
        var back = file.Read("all");
        Assert.That(back.ToRaw16(), Is.EqualTo(words));

        // Widening matches the reference conversion for every pattern.
        var floats = file.ReadFloat32("all");
        for (int i = 0; i < words.Length; i++)
        {
            float expected = type == StorageType.F16 ? (float)BitConverter.UInt16BitsToHalf(words[i]) : BitConverter.UInt32BitsToSingle((uint)words[i] << 16);
            if (float.IsNaN(expected)) Assert.That(float.IsNaN(floats[i]));
            else Assert.That(BitConverter.SingleToInt32Bits(floats[i]), Is.EqualTo(BitConverter.SingleToInt32Bits(expected)), $"0x{i:X4}");
        }
    }

    [Test]
    public void IntegerAndDoubleTensorsRoundTripAndConvert()
    {
        string path = PathIn("ints.safetensors");
        var i32 = new byte[12];
        BinaryPrimitives.WriteInt32LittleEndian(i32, -7);
        BinaryPrimitives.WriteInt32LittleEndian(i32.AsSpan(4), int.MaxValue);
        BinaryPrimitives.WriteInt32LittleEndian(i32.AsSpan(8), 42);
        var i64 = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(i64, long.MinValue);
        BinaryPrimitives.WriteInt64LittleEndian(i64.AsSpan(8), 1L << 40);
        var f64 = new byte[8];
        BinaryPrimitives.WriteDoubleLittleEndian(f64, Math.PI);
        SafeTensors.Write(path,
        [
            new StoredTensor("i32", StorageType.I32, [3], i32),
            new StoredTensor("i64", StorageType.I64, [2, 1], i64),
            new StoredTensor("f64", StorageType.F64, [], f64),
        ]);

        using var file = SafeTensors.Open(path);
        Assert.That(file.Read("i32").ToInt64(), Is.EqualTo(new long[] { -7, int.MaxValue, 42 }));
        Assert.That(file.Read("i64").ToInt64(), Is.EqualTo(new[] { long.MinValue, 1L << 40 }));
        Assert.That(file.ReadFloat32("i32"), Is.EqualTo(new[] { -7f, int.MaxValue, 42f }));
        var scalar = file.Read("f64");
        Assert.That(scalar.Shape, Is.Empty);
        Assert.That(scalar.ElementCount, Is.EqualTo(1));
        Assert.That(BinaryPrimitives.ReadDoubleLittleEndian(scalar.Data), Is.EqualTo(Math.PI));
        Assert.That(file.ReadFloat32("f64"), Is.EqualTo(new[] { (float)Math.PI }));
        Assert.Throws<InvalidOperationException>(() => scalar.ToInt64());
        Assert.Throws<InvalidOperationException>(() => scalar.ToRaw16());
    }

    [Test]
    public void NamesOrderMetadataAndEmptyTensorsSurvive()
    {
        string path = PathIn("meta.safetensors");
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcödé \"quoted\" \\ ok" };
        SafeTensors.Write(path,
        [
            StoredTensor.FromFloat32("zeta", [2], [1f, 2f]),
            StoredTensor.FromFloat32("empty", [0, 3], ReadOnlySpan<float>.Empty, StorageType.BF16),
            StoredTensor.FromFloat32("alpha", [1], [3f], StorageType.F16),
        ], metadata);

        using var file = SafeTensors.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { "zeta", "empty", "alpha" }));
        Assert.That(file.Metadata, Is.EquivalentTo(metadata));
        Assert.That(file.Read("empty").ElementCount, Is.Zero);
        Assert.That(file.ReadFloat32("empty"), Is.Empty);
        Assert.That(file.ReadFloat32("alpha"), Is.EqualTo(new[] { 3f }));
        Assert.That(file.Contains("zeta") && !file.Contains("ZETA"));
    }

    [Test]
    public void LargeSixteenBitTensorIsConvertedInChunksIntoCallerMemory()
    {
        string path = PathIn("big.safetensors");
        int n = 200_003; // several read chunks plus a ragged end
        var values = new float[n];
        var rng = new Random(5);
        for (int i = 0; i < n; i++) values[i] = (float)(rng.NextDouble() * 200 - 100);
        SafeTensors.Write(path, [StoredTensor.FromFloat32("big", [n], values, StorageType.BF16), StoredTensor.FromFloat32("after", [1], [9f])]);

        using var file = SafeTensors.Open(path);
        var dst = new float[n];
        file.ReadFloat32("big", dst);
        for (int i = 0; i < n; i++)
            Assert.That(dst[i], Is.EqualTo(HalfPrecision.BFloat16ToSingle(HalfPrecision.SingleToBFloat16(values[i]))), $"element {i}");
        Assert.That(file.ReadFloat32("after"), Is.EqualTo(new[] { 9f }));
        Assert.Throws<ArgumentException>(() => file.ReadFloat32("big", new float[n - 1]));
    }

    [Test]
    public void ReaderIsUsableFromSeveralThreads()
    {
        string path = PathIn("threads.safetensors");
        var tensors = Enumerable.Range(0, 16).Select(i => StoredTensor.FromFloat32($"t{i}", [1000], Iota(1000, i + 1))).ToList();
        SafeTensors.Write(path, tensors);
        using var file = SafeTensors.Open(path);
        Parallel.For(0, 64, k =>
        {
            int i = k % 16;
            Assert.That(file.ReadFloat32($"t{i}"), Is.EqualTo(Iota(1000, i + 1)));
        });
    }

    [Test]
    public void OverwritingAFileLeavesOnlyTheNewContent()
    {
        string path = PathIn("over.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("a", [1], [1f])]);
        SafeTensors.Write(path, [StoredTensor.FromFloat32("b", [2], [2f, 3f])]);
        using (var file = SafeTensors.Open(path))
        {
            Assert.That(file.Names, Is.EqualTo(new[] { "b" }));
            Assert.That(file.ReadFloat32("b"), Is.EqualTo(new[] { 2f, 3f }));
        }
        Assert.That(Directory.GetFiles(Dir).Select(Path.GetFileName), Is.EqualTo(new[] { "over.safetensors" }));
    }

    [Test]
    public void WriterRejectsDuplicateAndReservedNamesWithoutCreatingAFile()
    {
        string path = PathIn("bad.safetensors");
        var a = StoredTensor.FromFloat32("a", [1], [1f]);
        var ex = Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [a, a.WithName("a")]));
        Assert.That(ex!.Message, Does.Contain("'a'"));
        Assert.Throws<ArgumentException>(() => SafeTensors.Write(path, [a.WithName("__metadata__")]));
        Assert.That(Directory.GetFiles(Dir), Is.Empty);
    }

    [Test]
    public void TensorConstructorsCheckSizes()
    {
        Assert.Throws<ArgumentException>(() => new StoredTensor("x", StorageType.F32, [2, 2], new byte[15]));
        Assert.Throws<ArgumentException>(() => StoredTensor.FromFloat32("x", [3], [1f, 2f]));
        Assert.Throws<ArgumentException>(() => StoredTensor.FromFloat32("x", [1], [1f], StorageType.I32));
        Assert.Throws<ArgumentException>(() => StoredTensor.FromRaw16("x", StorageType.F32, [1], [(ushort)1]));
        Assert.Throws<ArgumentException>(() => StoredTensor.FromFloat32("x", [-1], ReadOnlySpan<float>.Empty));
        var t = StoredTensor.FromFloat32("x", [2, 3], Iota(6));
        Assert.That(t.ElementCount, Is.EqualTo(6));
        Assert.That(t.ByteLength, Is.EqualTo(24));
        var dst = new float[6];
        t.CopyToFloat32(dst);
        Assert.That(dst, Is.EqualTo(Iota(6)));
        Assert.Throws<ArgumentException>(() => t.CopyToFloat32(new float[5]));
    }

    [Test]
    public void WriteToStreamProducesTheSameBytesAsWriteToFile()
    {
        string path = PathIn("same.safetensors");
        var tensors = new[] { StoredTensor.FromFloat32("a", [3], [1f, 2f, 3f], StorageType.BF16), StoredTensor.FromFloat32("b", [1], [4f]) };
        SafeTensors.Write(path, tensors, new Dictionary<string, string> { ["k"] = "v" });
        using var ms = new MemoryStream();
        SafeTensors.WriteTo(ms, tensors, new Dictionary<string, string> { ["k"] = "v" });
        Assert.That(ms.ToArray(), Is.EqualTo(File.ReadAllBytes(path)));
    }
}

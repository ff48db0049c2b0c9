using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace NegDistill.Checkpoints.Tests;

/// <summary>Checks the on-disk layout by hand against the safetensors format spec by Hugging Face.</summary>
public class SafeTensorsLayoutTests : TempDirTest
{
    [Test]
    public void WrittenFileHasTheSpecLayoutByteForByte()
    {
        string path = PathIn("layout.safetensors");
        var a = StoredTensor.FromFloat32("a.weight", [2, 3], [1f, 2f, 3f, 4f, 5f, 6f]);              // 24 bytes
        var b = StoredTensor.FromFloat32("b.weight", [3], [1f, -2f, 0.5f], StorageType.BF16);       // 6 bytes
        var c = StoredTensor.FromFloat32("c.weight", [1, 1], [7f], StorageType.F16);                 // 2 bytes
        SafeTensors.Write(path, [a, b, c], new Dictionary<string, string> { ["format"] = "pt" });
        byte[] bytes = File.ReadAllBytes(path);

        // 8-byte little-endian header length.
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(n, Is.GreaterThan(0UL));
        Assert.That((8 + n) % 8, Is.Zero, "header is padded so the data section starts 8-byte aligned");
        Assert.That((ulong)bytes.Length, Is.EqualTo(8 + n + 24 + 6 + 2), "nothing but header and data");

        // UTF-8 JSON followed only by space padding.
        string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
        string json = header.TrimEnd(' ');
        Assert.That(json, Does.StartWith("{").And.EndWith("}"));
        Assert.That(header[json.Length..], Is.EqualTo(new string(' ', header.Length - json.Length)));
        Assert.That(json.Length, Is.GreaterThan(header.Length - 8), "at most 7 bytes of padding");

        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        Assert.That(root.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "__metadata__", "a.weight", "b.weight", "c.weight" }));
        Assert.That(root.GetProperty("__metadata__").GetProperty("format").GetString(), Is.EqualTo("pt"));

        void CheckEntry(string name, string dtype, long[] shape, long begin, long end)
        {
            var e = root.GetProperty(name);
            Assert.That(e.GetProperty("dtype").GetString(), Is.EqualTo(dtype), name);
            Assert.That(e.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()), Is.EqualTo(shape), name);
            Assert.That(e.GetProperty("data_offsets").EnumerateArray().Select(x => x.GetInt64()), Is.EqualTo(new[] { begin, end }), name);
        }
        // Offsets are relative to the data section, contiguous from 0, in the order given.
        CheckEntry("a.weight", "F32", [2, 3], 0, 24);
        CheckEntry("b.weight", "BF16", [3], 24, 30);
        CheckEntry("c.weight", "F16", [1, 1], 30, 32);

        int data = 8 + (int)n;
        for (int i = 0; i < 6; i++)
            Assert.That(BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(data + 4 * i)), Is.EqualTo(i + 1f));
        // BF16 of 1, -2, 0.5 is the upper half of the float bits: 0x3F80, 0xC000, 0x3F00.
        Assert.That(bytes.AsSpan(data + 24, 6).ToArray(), Is.EqualTo(new byte[] { 0x80, 0x3F, 0x00, 0xC0, 0x00, 0x3F }));
        // F16 of 7 is 0x4700.
        Assert.That(bytes.AsSpan(data + 30, 2).ToArray(), Is.EqualTo(new byte[] { 0x00, 0x47 }));
    }

    [Test]
    public void EmptyCheckpointIsAValidFile()
    {
        string path = PathIn("empty.safetensors");
        SafeTensors.Write(path, []);
        byte[] bytes = File.ReadAllBytes(path);
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.That(Encoding.UTF8.GetString(bytes, 8, (int)n).TrimEnd(), Is.EqualTo("{}"));
        using var file = SafeTensors.Open(path);
        Assert.That(file.Names, Is.Empty);
        Assert.That(file.Metadata, Is.Empty);
    }

    [Test]
    public void ReadsAHandCraftedFileWithUnorderedDataAndPadding()
    {
        // Data section deliberately in the opposite order to the header, with an unused gap; the header has
        // extra whitespace and a newline inside the JSON, keys in an unusual order, metadata last, and an
        // odd length made up with trailing spaces.
        string header = "{ \"second\" : {\"shape\":[2],\"dtype\":\"F16\",\"data_offsets\":[0,4]},\n"
                      + "  \"first\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[8,16]},"
                      + "\"__metadata__\":{\"who\":\"hand\"}}   ";
        byte[] h = Encoding.UTF8.GetBytes(header);
        var data = new byte[16];
        BinaryPrimitives.WriteUInt16LittleEndian(data, 0x3C00);          // 1.0 in F16
        BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(2), 0xC000); // -2.0 in F16
        data[4] = 0xEE; data[5] = 0xEE; data[6] = 0xEE; data[7] = 0xEE;  // unused gap
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(8), 0.25f);
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(12), -8f);
        string path = PathIn("hand.safetensors");
        using (var fs = File.Create(path))
        {
            var len = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
            fs.Write(len);
            fs.Write(h);
            fs.Write(data);
        }

        using var file = SafeTensors.Open(path);
        Assert.That(file.Names, Is.EqualTo(new[] { "second", "first" }));
        Assert.That(file.Metadata["who"], Is.EqualTo("hand"));
        Assert.That(file.ReadFloat32("second"), Is.EqualTo(new[] { 1f, -2f }));
        Assert.That(file.ReadFloat32("first"), Is.EqualTo(new[] { 0.25f, -8f }));
        Assert.That(file.Info("first").Shape, Is.EqualTo(new long[] { 1, 2 }));
        Assert.That(file.DataStart, Is.EqualTo(8 + h.Length));
    }
}

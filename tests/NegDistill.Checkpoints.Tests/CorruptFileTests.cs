using System.Buffers.Binary;
using System.Text;

namespace NegDistill.Checkpoints.Tests;

/// <summary>Each corrupt file is built byte by byte and must fail with its own clear error naming the file and tensor.</summary>
public class CorruptFileTests : TempDirTest
{
    private string Craft(string fileName, string headerJson, int dataBytes, ulong? lengthOverride = null)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        string path = PathIn(fileName);
        using var fs = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, lengthOverride ?? (ulong)header.Length);
        fs.Write(len);
        fs.Write(header);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    private static CheckpointFormatException Fails(string path, CheckpointErrorKind kind, string? tensor, params string[] alsoMentions)
    {
        var ex = Assert.Throws<CheckpointFormatException>(() => SafeTensors.Open(path).Dispose())!;
        Check(ex, path, kind, tensor, alsoMentions);
        return ex;
    }

    private static void Check(CheckpointFormatException ex, string path, CheckpointErrorKind kind, string? tensor, params string[] alsoMentions)
    {
        Assert.That(ex.Kind, Is.EqualTo(kind), ex.Message);
        Assert.That(ex.FilePath, Is.EqualTo(path));
        Assert.That(ex.Message, Does.Contain(path), "message names the file");
        Assert.That(ex.TensorName, Is.EqualTo(tensor));
        if (tensor is not null) Assert.That(ex.Message, Does.Contain($"'{tensor}'"), "message names the tensor");
        foreach (string s in alsoMentions) Assert.That(ex.Message, Does.Contain(s));
    }

    [Test]
    public void FileShorterThanTheLengthPrefixIsTruncated()
    {
        string path = PathIn("tiny.safetensors");
        File.WriteAllBytes(path, [1, 0, 0]);
        Fails(path, CheckpointErrorKind.Truncated, null, "truncated", "3 bytes");
    }

    [Test]
    public void HeaderLengthPastTheEndOfTheFile()
    {
        string path = Craft("hlen.safetensors", "{}", 0, lengthOverride: 1000);
        Fails(path, CheckpointErrorKind.HeaderLengthOutOfRange, null, "header length 1000", "past the end");
    }

    [Test]
    public void HeaderLengthWithTheTopBitSetIsNotTreatedAsNegative()
    {
        string path = Craft("hlen2.safetensors", "{}", 16, lengthOverride: 0x8000_0000_0000_0010UL);
        Fails(path, CheckpointErrorKind.HeaderLengthOutOfRange, null, "past the end");
    }

    [Test]
    public void HeaderThatIsNotJson()
    {
        string path = Craft("json.safetensors", "{\"a\": {\"dtype\": \"F32\",", 0);
        Fails(path, CheckpointErrorKind.InvalidJson, null, "not valid JSON");
    }

    [Test]
    public void HeaderThatIsNotAnObject()
    {
        string path = Craft("array.safetensors", "[1, 2]", 0);
        Fails(path, CheckpointErrorKind.InvalidHeader, null, "object");
    }

    [Test]
    public void EntryWithoutDataOffsets()
    {
        string path = Craft("nooff.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
        Fails(path, CheckpointErrorKind.InvalidHeader, "w", "data_offsets");
    }

    [Test]
    public void NegativeShapeDimension()
    {
        string path = Craft("negshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
        Fails(path, CheckpointErrorKind.InvalidHeader, "w", "-1");
    }

    [Test]
    public void OverlappingOffsets()
    {
        string path = Craft("overlap.safetensors",
            "{\"first\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            + "\"second\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
        Fails(path, CheckpointErrorKind.OverlappingOffsets, "second", "overlap", "'first'", "[0, 8]", "[4, 12]");
    }

    [Test]
    public void BeginAfterEnd()
    {
        string path = Craft("backwards.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8);
        Fails(path, CheckpointErrorKind.OffsetsOutOfRange, "w", "[8, 4]", "begin is after end");
    }

    [Test]
    public void EndPastTheDataSection()
    {
        // A gap before 'late' shows the layout itself is wrong rather than the file cut short.
        string path = Craft("range.safetensors",
            "{\"early\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
            + "\"late\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}", 16);
        Fails(path, CheckpointErrorKind.OffsetsOutOfRange, "late", "[16, 24]", "out of range", "16 bytes");
    }

    [Test]
    public void OffsetLargerThanASignedLong()
    {
        string path = Craft("huge.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", 4);
        Fails(path, CheckpointErrorKind.InvalidHeader, "w", "18446744073709551615");
    }

    [Test]
    public void UnknownDtype()
    {
        string path = Craft("dtype.safetensors", "{\"w\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
        Fails(path, CheckpointErrorKind.UnknownDtype, "w", "Q4_K");
    }

    [Test]
    public void ShapeDisagreesWithByteCount()
    {
        string path = Craft("shape.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,2],\"data_offsets\":[0,8]}}", 8);
        Fails(path, CheckpointErrorKind.ShapeMismatch, "w", "[3, 2]", "12 bytes", "span 8");
    }

    [Test]
    public void DuplicateTensorName()
    {
        string path = Craft("dup.safetensors",
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8);
        Fails(path, CheckpointErrorKind.DuplicateTensor, "w", "more than once");
    }

    [Test]
    public void MetadataValueThatIsNotAString()
    {
        string path = Craft("meta.safetensors", "{\"__metadata__\":{\"step\":5}}", 0);
        Fails(path, CheckpointErrorKind.InvalidHeader, null, "'step'", "string");
    }

    [Test]
    public void TruncatedFile()
    {
        string path = PathIn("cut.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("head", [4], [1f, 2f, 3f, 4f]), StoredTensor.FromFloat32("tail", [4], [5f, 6f, 7f, 8f])]);
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^5]);
        Fails(path, CheckpointErrorKind.Truncated, "tail", "truncated", "32 bytes", "27 follow");
    }

    [Test]
    public void TruncatedInsideTheHeader()
    {
        string path = PathIn("cuthead.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("w", [4], [1f, 2f, 3f, 4f])]);
        byte[] bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..20]);
        Fails(path, CheckpointErrorKind.HeaderLengthOutOfRange, null, "past the end");
    }

    [Test]
    public void AskingForATensorThatIsNotThere()
    {
        string path = PathIn("ok.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("present", [1], [1f])]);
        using var file = SafeTensors.Open(path);
        Check(Assert.Throws<CheckpointFormatException>(() => file.Read("absent"))!, path, CheckpointErrorKind.MissingTensor, "absent");
        Check(Assert.Throws<CheckpointFormatException>(() => file.Info("absent"))!, path, CheckpointErrorKind.MissingTensor, "absent");
        Check(Assert.Throws<CheckpointFormatException>(() => file.ReadFloat32("absent", new float[1]))!, path, CheckpointErrorKind.MissingTensor, "absent");
    }

    [Test]
    public void FileThatDoesNotExist()
    {
        string path = PathIn("nowhere.safetensors");
        Fails(path, CheckpointErrorKind.MissingFile, null, "does not exist");
    }

    [Test]
    public void ReadingAfterDisposeIsRefused()
    {
        string path = PathIn("disposed.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("w", [1], [1f])]);
        var file = SafeTensors.Open(path);
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.Read("w"));
    }
}

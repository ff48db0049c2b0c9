using System.Text;

namespace NegDistill.Checkpoints.Tests;

public class AtomicFileTests : TempDirTest
{
    private string[] FilesInDir() => Directory.GetFiles(Dir).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray();

    [Test]
    public void ThrowingWriterLeavesThePreviousContentAndNoTempFile()
    {
        string path = PathIn("state.bin");
        AtomicFile.WriteAllBytes(path, [1, 2, 3]);
        var ex = Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[100_000]); // a partial write, larger than the stream's buffer
            throw new InvalidOperationException("simulated crash mid-write");
        }))!;
        Assert.That(ex.Message, Is.EqualTo("simulated crash mid-write"));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(new byte[] { 1, 2, 3 }));
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "state.bin" }));
    }

    [Test]
    public void ThrowingWriterWithNoPreviousFileLeavesNothing()
    {
        string path = PathIn("fresh.bin");
        Assert.Throws<IOException>(() => AtomicFile.Write(path, s =>
        {
            s.WriteByte(42);
            throw new IOException("disk full");
        }));
        Assert.That(FilesInDir(), Is.Empty);
    }

    [Test]
    public void SuccessfulWriteReplacesTheFileAndLeavesNoTempFile()
    {
        string path = PathIn("note.txt");
        AtomicFile.WriteAllText(path, "first");
        string? tempSeen = null;
        AtomicFile.Write(path, s =>
        {
            // While writing, the target still holds the old content and the new bytes go to a sibling file.
            Assert.That(File.ReadAllText(path), Is.EqualTo("first"));
            tempSeen = Directory.GetFiles(Dir).Select(Path.GetFileName).Single(n => n != "note.txt");
            s.Write("second"u8);
        });
        Assert.That(File.ReadAllText(path), Is.EqualTo("second"));
        Assert.That(AtomicFile.IsTempFileName(tempSeen!), $"temp file '{tempSeen}' should be recognisable");
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "note.txt" }));
    }

    [Test]
    public void TextIsUtf8WithoutByteOrderMark()
    {
        string path = PathIn("utf8.txt");
        AtomicFile.WriteAllText(path, "é");
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(Encoding.UTF8.GetBytes("é")));
    }

    [Test]
    public void CallbackThatClosesTheStreamFailsAndKeepsTheOldFile()
    {
        string path = PathIn("closed.bin");
        AtomicFile.WriteAllBytes(path, [9]);
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.WriteByte(1);
            s.Dispose();
        }));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(new byte[] { 9 }));
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "closed.bin" }));
    }

    [Test]
    public void MissingFolderIsReportedAndNothingIsCreated()
    {
        string path = Path.Combine(Dir, "absent", "x.bin");
        Assert.Throws<DirectoryNotFoundException>(() => AtomicFile.WriteAllBytes(path, [1]));
        Assert.That(Directory.Exists(Path.Combine(Dir, "absent")), Is.False);
    }

    [Test]
    public void SafeTensorsWriteFailingMidwayKeepsThePreviousCheckpoint()
    {
        string path = PathIn("model.safetensors");
        SafeTensors.Write(path, [StoredTensor.FromFloat32("w", [2], [1f, 2f])]);
        byte[] before = File.ReadAllBytes(path);

        // The enumeration throws after the header would have needed every tensor: nothing may reach the target.
        IEnumerable<StoredTensor> Failing()
        {
            yield return StoredTensor.FromFloat32("w", [2], [3f, 4f]);
            throw new InvalidOperationException("producer failed");
        }
        Assert.Throws<InvalidOperationException>(() => SafeTensors.Write(path, Failing()));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(before));
        Assert.That(FilesInDir(), Is.EqualTo(new[] { "model.safetensors" }));
    }
}

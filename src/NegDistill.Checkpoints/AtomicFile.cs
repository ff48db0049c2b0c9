using System.Runtime.InteropServices;
using System.Text;

namespace NegDistill.Checkpoints;

/// <summary>
/// Replaces a file so that a reader (or a crash) sees either the old content or the complete new content, never a
/// partial write: the content goes to a temporary file in the same folder, is flushed to the storage device, and is
/// then renamed over the target. On failure the temporary file is deleted and the target is left untouched.
/// </summary>
public static class AtomicFile
{
    private const string TempSuffix = ".tmp";

    /// <summary>
    /// Writes <paramref name="path"/> atomically. <paramref name="write"/> receives a writable stream positioned at
    /// the start of an empty temporary file; it must not close the stream.
    /// </summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(write);
        string target = Path.GetFullPath(path);
        string directory = Path.GetDirectoryName(target) ?? throw new ArgumentException($"'{path}' has no parent folder", nameof(path));
        if (!Directory.Exists(directory))
            throw new DirectoryNotFoundException($"cannot write '{target}': folder '{directory}' does not exist");
        if (Directory.Exists(target))
            throw new IOException($"cannot write '{target}': a folder with that name exists");

        string temp = TempPathFor(target);
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
            {
                write(stream);
                if (!stream.CanWrite)
                    throw new InvalidOperationException($"the callback writing '{target}' closed the stream; it must leave it open");
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, target, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(temp);
            throw new IOException($"cannot write '{target}': {e.Message} (the previous version of the file, if any, is unchanged)", e);
        }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == "value")
        {
            // .NET reports a write refused with EFBIG (a file-size limit or quota) this way, not as an IOException
            TryDelete(temp);
            throw new IOException($"cannot write '{target}': the file is larger than the file system allows here ({e.Message}); the previous version of the file, if any, is unchanged", e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        DirectorySync.TrySync(directory);
    }

    /// <summary>Writes <paramref name="text"/> as UTF-8 (without a byte-order mark) atomically.</summary>
    public static void WriteAllText(string path, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text);
        Write(path, s => s.Write(bytes));
    }

    /// <summary>Writes <paramref name="bytes"/> atomically.</summary>
    public static void WriteAllBytes(string path, byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        Write(path, s => s.Write(bytes));
    }

    /// <summary>Deletes the temporary files that writes into <paramref name="directory"/> left behind when the
    /// process was killed mid-write (a completed write never leaves one); returns how many.</summary>
    public static int SweepStale(string directory)
    {
        if (!Directory.Exists(directory)) return 0;
        int n = 0;
        foreach (var f in Directory.EnumerateFiles(directory))
            if (IsTempFileName(Path.GetFileName(f))) { TryDelete(f); n++; }
        return n;
    }

    /// <summary>True if <paramref name="fileName"/> has the shape of a temporary file this class creates.</summary>
    public static bool IsTempFileName(string fileName) =>
        fileName.StartsWith('.') && fileName.EndsWith(TempSuffix, StringComparison.Ordinal) && fileName.Contains(".~", StringComparison.Ordinal);

    private static string TempPathFor(string target)
    {
        string directory = Path.GetDirectoryName(target)!;
        string name = Path.GetFileName(target);
        return Path.Combine(directory, $".{name}.~{Guid.NewGuid():N}{TempSuffix}");
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

/// <summary>
/// Flushes a folder's entries to disk after a rename so the rename itself survives a power loss (POSIX only; on
/// Windows the rename is already made durable by the file system). Best effort: failures are ignored, the content
/// of the file has already been flushed.
/// </summary>
internal static partial class DirectorySync
{
    private const int ReadOnly = 0; // O_RDONLY on Linux and macOS

    public static void TrySync(string directory)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD())) return;
        try
        {
            int fd = Open(directory, ReadOnly);
            if (fd < 0) return;
            try { _ = FSync(fd); }
            finally { _ = Close(fd); }
        }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int FSync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}

using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace NegDistill.Checkpoints;

/// <summary>
/// An open safetensors file. The header is parsed and validated when the file is opened; tensor bytes are read
/// on demand with positional reads, so reading is safe from several threads at once.
/// </summary>
public sealed class SafeTensorsFile : ITensorSource
{
    private const int ChunkElements = 1 << 16;

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, TensorInfo> _infos;
    private readonly string[] _names;
    private readonly Dictionary<string, string> _metadata;

    private SafeTensorsFile(string path, SafeFileHandle handle, long dataStart, long dataLength, List<TensorInfo> infos, Dictionary<string, string> metadata)
    {
        Path = path;
        _handle = handle;
        DataStart = dataStart;
        DataLength = dataLength;
        _names = infos.Select(i => i.Name).ToArray();
        _infos = infos.ToDictionary(i => i.Name, StringComparer.Ordinal);
        _metadata = metadata;
    }

    public string Path { get; }

    /// <summary>Absolute file offset at which the data section starts (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>Bytes in the data section.</summary>
    public long DataLength { get; }

    public IReadOnlyList<string> Names => _names;

    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    public IEnumerable<TensorInfo> Infos => _names.Select(n => _infos[n]);

    public bool Contains(string name) => _infos.ContainsKey(name);

    public TensorInfo Info(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_infos.TryGetValue(name, out var info)) return info;
        throw new CheckpointFormatException(CheckpointErrorKind.MissingTensor, Path, name, "no tensor with this name in the file");
    }

    public StoredTensor Read(string name)
    {
        var info = Info(name);
        if (info.ByteLength > Array.MaxLength)
            throw new NotSupportedException(
                $"tensor '{name}' in '{Path}' has {info.ByteLength} bytes, more than one array holds; read it with ReadRaw or ReadFloat32 into caller memory instead");
        var data = new byte[info.ByteLength];
        ReadBytes(info, info.DataBegin, data);
        return new StoredTensor(info.Name, info.Type, info.Shape, data);
    }

    /// <summary>Copies a tensor's raw stored bytes into <paramref name="destination"/>, which must be exactly its byte length.</summary>
    public void ReadRaw(string name, Span<byte> destination)
    {
        var info = Info(name);
        if (destination.Length != info.ByteLength)
            throw new ArgumentException($"tensor '{name}' has {info.ByteLength} bytes but the destination holds {destination.Length}", nameof(destination));
        ReadBytes(info, info.DataBegin, destination);
    }

    public float[] ReadFloat32(string name)
    {
        var info = Info(name);
        var result = new float[info.ElementCount];
        ReadFloat32(info, result);
        return result;
    }

    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = Info(name);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"tensor '{name}' has {info.ElementCount} elements but the destination holds {destination.Length}", nameof(destination));
        ReadFloat32(info, destination);
    }

    private void ReadFloat32(TensorInfo info, Span<float> destination)
    {
        if (info.Type == StorageType.F32 && BitConverter.IsLittleEndian)
        {
            ReadBytes(info, info.DataBegin, MemoryMarshal.AsBytes(destination));
            return;
        }
        int size = info.Type.ElementSize();
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkElements * size);
        try
        {
            long position = info.DataBegin;
            for (int done = 0; done < destination.Length;)
            {
                int n = Math.Min(ChunkElements, destination.Length - done);
                var bytes = buffer.AsSpan(0, n * size);
                ReadBytes(info, position, bytes);
                ElementCodec.DecodeToFloat32(info.Type, bytes, destination.Slice(done, n));
                position += bytes.Length;
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void ReadBytes(TensorInfo info, long relativeOffset, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_handle.IsClosed, this);
        long offset = DataStart + relativeOffset;
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(_handle, destination, offset);
            if (n == 0)
                throw new CheckpointFormatException(CheckpointErrorKind.Truncated, Path, info.Name,
                    $"file is truncated: it ended at byte {offset} while reading data_offsets [{info.DataBegin}, {info.DataEnd}]");
            destination = destination[n..];
            offset += n;
        }
    }

    public void Dispose() => _handle.Dispose();

    internal static SafeTensorsFile OpenFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new CheckpointFormatException(CheckpointErrorKind.MissingFile, path, null, "file does not exist", e);
        }
        try
        {
            return Parse(path, handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static SafeTensorsFile Parse(string path, SafeFileHandle handle)
    {
        long fileLength = RandomAccess.GetLength(handle);
        if (fileLength < 8)
            throw new CheckpointFormatException(CheckpointErrorKind.Truncated, path, null,
                $"file is truncated: it has {fileLength} bytes, fewer than the 8-byte header length prefix");

        Span<byte> prefix = stackalloc byte[8];
        ReadExactly(handle, prefix, 0, path);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(fileLength - 8))
            throw new CheckpointFormatException(CheckpointErrorKind.HeaderLengthOutOfRange, path, null,
                $"header length {headerLength} runs past the end of the file ({fileLength} bytes, so at most {fileLength - 8} header bytes)");
        if (headerLength > SafeTensors.MaxHeaderBytes)
            throw new CheckpointFormatException(CheckpointErrorKind.HeaderLengthOutOfRange, path, null,
                $"header length {headerLength} exceeds the {SafeTensors.MaxHeaderBytes}-byte limit");

        var headerBytes = new byte[headerLength];
        ReadExactly(handle, headerBytes, 8, path);
        long dataStart = 8 + (long)headerLength;
        long dataLength = fileLength - dataStart;

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(headerBytes);
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidJson, path, null, $"header is not valid JSON: {e.Message}", e);
        }

        var infos = new List<TensorInfo>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, null, $"header must be a JSON object, found {root.ValueKind}");

            var seen = new HashSet<string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name == SafeTensors.MetadataKey)
                {
                    if (sawMetadata)
                        throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, null, $"'{SafeTensors.MetadataKey}' appears more than once");
                    sawMetadata = true;
                    ParseMetadata(path, property.Value, metadata);
                    continue;
                }
                if (!seen.Add(property.Name))
                    throw new CheckpointFormatException(CheckpointErrorKind.DuplicateTensor, path, property.Name, "the header lists this tensor more than once");
                infos.Add(ParseTensor(path, property.Name, property.Value));
            }
        }

        CheckOverlaps(path, infos);
        CheckRange(path, infos, dataLength);
        return new SafeTensorsFile(path, handle, dataStart, dataLength, infos, metadata);
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind == JsonValueKind.Null) return;
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, null, $"'{SafeTensors.MetadataKey}' must be an object of strings, found {value.ValueKind}");
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, null,
                    $"metadata value for '{entry.Name}' must be a string, found {entry.Value.ValueKind}");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, null, $"metadata key '{entry.Name}' appears more than once");
        }
    }

    private static TensorInfo ParseTensor(string path, string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, name, $"entry must be an object, found {value.ValueKind}");

        if (!value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, name, "entry has no string \"dtype\"");
        string dtype = dtypeElement.GetString()!;
        if (!StorageTypes.TryParseDtype(dtype, out var type))
            throw new CheckpointFormatException(CheckpointErrorKind.UnknownDtype, path, name,
                $"unknown or unsupported dtype '{dtype}' (supported: F32, F16, BF16, F64, I32, I64)");

        if (!value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, name, "entry has no \"shape\" array");
        var shape = new long[shapeElement.GetArrayLength()];
        int k = 0;
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, name, $"shape entry {d.GetRawText()} is not a non-negative integer");
            shape[k++] = dim;
        }

        if (!value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array || offsetsElement.GetArrayLength() != 2)
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, name, "entry has no \"data_offsets\" array of two integers");
        long begin = ReadOffset(path, name, offsetsElement[0]);
        long end = ReadOffset(path, name, offsetsElement[1]);
        if (begin > end)
            throw new CheckpointFormatException(CheckpointErrorKind.OffsetsOutOfRange, path, name,
                $"data_offsets [{begin}, {end}] are out of range: begin is after end");

        long count = 1;
        long bytes;
        try
        {
            foreach (long d in shape) count = checked(count * d);
            bytes = checked(count * type.ElementSize());
        }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(CheckpointErrorKind.ShapeMismatch, path, name, $"shape {Shapes.Format(shape)} is too large");
        }
        if (bytes != end - begin)
            throw new CheckpointFormatException(CheckpointErrorKind.ShapeMismatch, path, name,
                $"shape {Shapes.Format(shape)} of {dtype} needs {bytes} bytes but data_offsets [{begin}, {end}] span {end - begin}");

        return new TensorInfo(name, type, shape, begin, end, count);
    }

    private static long ReadOffset(string path, string name, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long v) || v < 0)
            throw new CheckpointFormatException(CheckpointErrorKind.InvalidHeader, path, name, $"data_offsets entry {e.GetRawText()} is not a non-negative 63-bit integer");
        return v;
    }

    private static void CheckOverlaps(string path, List<TensorInfo> infos)
    {
        // Empty tensors occupy no bytes and cannot overlap anything.
        var sorted = infos.Where(i => i.ByteLength > 0).OrderBy(i => i.DataBegin).ThenBy(i => i.DataEnd).ToList();
        TensorInfo? reach = null; // the tensor reaching furthest so far
        foreach (var t in sorted)
        {
            if (reach is not null && t.DataBegin < reach.DataEnd)
                throw new CheckpointFormatException(CheckpointErrorKind.OverlappingOffsets, path, t.Name,
                    $"data_offsets [{t.DataBegin}, {t.DataEnd}] overlap tensor '{reach.Name}' at [{reach.DataBegin}, {reach.DataEnd}]");
            if (reach is null || t.DataEnd > reach.DataEnd) reach = t;
        }
    }

    private static void CheckRange(string path, List<TensorInfo> infos, long dataLength)
    {
        var outside = infos.Where(i => i.DataEnd > dataLength).OrderBy(i => i.DataBegin).FirstOrDefault();
        if (outside is null) return;

        // If the tensors tile the data section contiguously from offset 0 the layout itself is sound and the file
        // simply ends early; otherwise the offsets themselves point outside the data section.
        var sorted = infos.Where(i => i.ByteLength > 0).OrderBy(i => i.DataBegin).ToList();
        long expected = 0;
        bool contiguous = true;
        foreach (var t in sorted)
        {
            if (t.DataBegin != expected) { contiguous = false; break; }
            expected = t.DataEnd;
        }
        if (contiguous)
            throw new CheckpointFormatException(CheckpointErrorKind.Truncated, path, outside.Name,
                $"file is truncated: the header describes {expected} bytes of tensor data but only {dataLength} follow it; this tensor's data_offsets [{outside.DataBegin}, {outside.DataEnd}] run past the end");
        throw new CheckpointFormatException(CheckpointErrorKind.OffsetsOutOfRange, path, outside.Name,
            $"data_offsets [{outside.DataBegin}, {outside.DataEnd}] are out of range: the data section holds {dataLength} bytes");
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> destination, long offset, string path)
    {
        while (!destination.IsEmpty)
        {
            int n = RandomAccess.Read(handle, destination, offset);
            if (n == 0)
                throw new CheckpointFormatException(CheckpointErrorKind.Truncated, path, null, $"file is truncated: it ended at byte {offset} while reading the header");
            destination = destination[n..];
            offset += n;
        }
    }
}

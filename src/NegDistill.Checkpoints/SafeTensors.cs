using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace NegDistill.Checkpoints;

/// <summary>
/// Reads and writes the safetensors format as laid out in the safetensors format spec by Hugging Face:
/// an 8-byte little-endian unsigned header length N, N bytes of UTF-8 JSON mapping each tensor name to
/// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the start of the data section) plus an
/// optional "__metadata__" object of string to string, then the data section.
/// </summary>
public static class SafeTensors
{
    /// <summary>The reserved header key holding free-form string metadata.</summary>
    public const string MetadataKey = "__metadata__";

    /// <summary>Largest header accepted when reading (the reference implementation uses the same limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> atomically (temporary file in the same folder,
    /// flushed to disk, then renamed over the target). Tensors are laid out contiguously in the order given and the
    /// header is padded with spaces so the data section starts on an 8-byte boundary.
    /// </summary>
    public static void Write(string path, IEnumerable<StoredTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        var header = BuildHeader(list, metadata); // validate before touching the file system
        AtomicFile.Write(path, stream => WriteBody(stream, header, list));
    }

    /// <summary>Writes a safetensors image to <paramref name="stream"/> (same layout as <see cref="Write"/>).</summary>
    public static void WriteTo(Stream stream, IEnumerable<StoredTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        WriteBody(stream, BuildHeader(list, metadata), list);
    }

    /// <summary>
    /// Opens a safetensors file, parsing and validating its header. Tensor data is read on demand, one tensor at a
    /// time; the file is never loaded whole. Throws <see cref="CheckpointFormatException"/> for malformed files.
    /// </summary>
    public static SafeTensorsFile Open(string path) => SafeTensorsFile.OpenFile(path);

    private static void WriteBody(Stream stream, byte[] header, List<StoredTensor> tensors)
    {
        Span<byte> prefix = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
        stream.Write(prefix);
        stream.Write(header);
        foreach (var t in tensors) stream.Write(t.Data);
    }

    internal static byte[] BuildHeader(IReadOnlyList<StoredTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (t is null) throw new ArgumentException("the tensor list contains null");
            if (t.Name == MetadataKey) throw new ArgumentException($"'{MetadataKey}' is reserved and cannot name a tensor");
            if (!seen.Add(t.Name)) throw new ArgumentException($"tensor name '{t.Name}' appears more than once");
        }

        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata)
                {
                    ArgumentNullException.ThrowIfNull(value, $"metadata['{key}']");
                    json.WriteString(key, value);
                }
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.Type.DtypeName());
                json.WriteStartArray("shape");
                foreach (long d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset = checked(offset + t.ByteLength);
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }

        // Pad with spaces so that 8 + header length is a multiple of 8: every tensor then starts 8-byte aligned
        // relative to the data section, and the data section itself is 8-byte aligned in the file.
        int length = buffer.WrittenCount;
        int padded = (length + 8 + 7) / 8 * 8 - 8;
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(length).Fill((byte)' ');
        return header;
    }
}

// SafeTensorsLite: a small reader/writer of the safetensors format, written apart from the engine's
// (src/NegDistill.Checkpoints/SafeTensors.cs, SafeTensorsFile.cs) so that the parity worker shares no
// code with what it checks. Layout (Hugging Face safetensors spec):
//   u64 little-endian N | N bytes of UTF-8 JSON | data section
//   JSON: { "name": {"dtype": "F64", "shape": [2, 3], "data_offsets": [begin, end]}, ..., "__metadata__": {...} }
//   offsets are relative to the start of the data section; data is raw little-endian, row-major.
// Supported dtypes: F64, F32, F16, BF16 (read only, widened), I32, I64. Tensors come back as torch
// tensors on the CPU in their stored dtype (F16/BF16 as float32).
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace NegDistill.TorchReference;

/// <summary>A malformed or unexpected input file; the message names the file and, where there is one, the tensor.</summary>
public sealed class InputException(string message) : Exception(message);

public static class SafeTensorsLite
{
    /// <summary>Reads every tensor of a .safetensors file. Errors name the file and the tensor.</summary>
    public static Dictionary<string, Tensor> Read(string path)
    {
        if (!File.Exists(path)) throw new InputException($"{path}: file not found");
        byte[] all = File.ReadAllBytes(path);
        if (all.Length < 8) throw new InputException($"{path}: {all.Length} bytes, too short for a safetensors header");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(all);
        if (n > (ulong)(all.Length - 8)) throw new InputException($"{path}: header length {n} runs past the end of the file ({all.Length} bytes)");
        int dataStart = 8 + (int)n;
        long dataLen = all.Length - dataStart;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(all.AsMemory(8, (int)n)); }
        catch (JsonException e) { throw new InputException($"{path}: header is not valid JSON ({e.Message})"); }
        var result = new Dictionary<string, Tensor>();
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InputException($"{path}: header is not a JSON object");
            foreach (var entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Name == "__metadata__") continue;
                string name = entry.Name;
                var e = entry.Value;
                string Where() => $"{path}: tensor '{name}'";
                if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String) throw new InputException($"{Where()}: no dtype");
                if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) throw new InputException($"{Where()}: no shape");
                if (!e.TryGetProperty("data_offsets", out var off) || off.GetArrayLength() != 2) throw new InputException($"{Where()}: no data_offsets [begin, end]");
                long[] shape = sh.EnumerateArray().Select(d => d.GetInt64()).ToArray();
                long count = 1;
                foreach (long d in shape) { if (d < 0) throw new InputException($"{Where()}: negative dimension in shape"); count *= d; }
                long begin = off[0].GetInt64(), end = off[1].GetInt64();
                string dtype = dt.GetString()!;
                int size = dtype switch { "F64" or "I64" => 8, "F32" or "I32" => 4, "F16" or "BF16" => 2, _ => 0 };
                if (size == 0) throw new InputException($"{Where()}: dtype {dtype} is not supported (F64, F32, F16, BF16, I32, I64)");
                if (begin < 0 || end < begin || end > dataLen) throw new InputException($"{Where()}: data_offsets [{begin}, {end}] outside the data section of {dataLen} bytes");
                if (end - begin != count * size) throw new InputException($"{Where()}: {end - begin} bytes for shape [{string.Join(", ", shape)}] of {dtype} (needs {count * size})");
                var bytes = all.AsSpan(dataStart + (int)begin, (int)(end - begin));
                result[name] = dtype switch
                {
                    "F64" => tensor(Decode(bytes, 8, s => BinaryPrimitives.ReadDoubleLittleEndian(s)), shape, ScalarType.Float64),
                    "F32" => tensor(Decode(bytes, 4, s => BinaryPrimitives.ReadSingleLittleEndian(s)), shape, ScalarType.Float32),
                    "I64" => tensor(Decode(bytes, 8, s => BinaryPrimitives.ReadInt64LittleEndian(s)), shape, ScalarType.Int64),
                    "I32" => tensor(Decode(bytes, 4, s => BinaryPrimitives.ReadInt32LittleEndian(s)), shape, ScalarType.Int32),
                    "F16" => tensor(Decode(bytes, 2, s => (float)BinaryPrimitives.ReadHalfLittleEndian(s)), shape, ScalarType.Float32),
                    _ => tensor(Decode(bytes, 2, s => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s) << 16)), shape, ScalarType.Float32),
                };
            }
        }
        return result;
    }

    delegate T Reader<T>(ReadOnlySpan<byte> s);

    static T[] Decode<T>(ReadOnlySpan<byte> bytes, int size, Reader<T> read)
    {
        var r = new T[bytes.Length / size];
        for (int i = 0; i < r.Length; i++) r[i] = read(bytes.Slice(i * size, size));
        return r;
    }

    /// <summary>Writes tensors (float64, float32, int32, int64; any device, any layout) to a .safetensors
    /// file, in the order given, the data section starting on an 8-byte boundary.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor T)> tensors)
    {
        var items = new List<(string Name, string Dtype, long[] Shape, byte[] Data)>();
        foreach (var (name, t0) in tensors)
        {
            using var t = t0.detach().cpu().contiguous();
            long[] shape = t.shape;
            (string dt, byte[] data) = t.dtype switch
            {
                ScalarType.Float64 => ("F64", MemoryMarshal.AsBytes<double>(t.data<double>().ToArray()).ToArray()),
                ScalarType.Float32 => ("F32", MemoryMarshal.AsBytes<float>(t.data<float>().ToArray()).ToArray()),
                ScalarType.Int64 => ("I64", MemoryMarshal.AsBytes<long>(t.data<long>().ToArray()).ToArray()),
                ScalarType.Int32 => ("I32", MemoryMarshal.AsBytes<int>(t.data<int>().ToArray()).ToArray()),
                _ => throw new ArgumentException($"tensor '{name}': dtype {t.dtype} cannot be written (float64, float32, int64, int32)"),
            };
            if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian host");
            items.Add((name, dt, shape, data));
        }
        var header = new StringBuilder("{");
        long offset = 0;
        bool first = true;
        foreach (var (name, dt, shape, data) in items)
        {
            if (!first) header.Append(',');
            first = false;
            header.Append(JsonSerializer.Serialize(name)).Append(":{\"dtype\":\"").Append(dt).Append("\",\"shape\":[")
                  .Append(string.Join(",", shape)).Append("],\"data_offsets\":[").Append(offset).Append(',').Append(offset + data.Length).Append("]}");
            offset += data.Length;
        }
        header.Append('}');
        while ((8 + Encoding.UTF8.GetByteCount(header.ToString())) % 8 != 0) header.Append(' ');
        byte[] h = Encoding.UTF8.GetBytes(header.ToString());
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        string tmp = path + ".tmp";
        using (var f = File.Create(tmp))
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)h.Length);
            f.Write(len);
            f.Write(h);
            foreach (var it in items) f.Write(it.Data);
        }
        File.Move(tmp, path, overwrite: true);
    }
}

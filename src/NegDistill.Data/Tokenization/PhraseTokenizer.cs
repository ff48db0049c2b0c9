using System.Text;
using System.Text.Json;

namespace NegDistill.Data;

/// <summary>
/// The byte tokenizer plus a fixed list of phrases (whole words with their spaces, the prompt headers,
/// " = ", "The answer is \boxed{"), each one id: the demo world's text in a third of the byte count, so a
/// tiny model trains and decodes about three times faster on the same problems. Digits stay single
/// bytes, so arithmetic is learnt digit by digit (carries generalise; a table of whole numbers would
/// have to be memorised).
///
/// Ids: 0..255 the byte, 256 BOS, 257 EOS, 258 PAD (as <see cref="ByteTokenizer"/>), 259 + i phrase i.
/// Encoding is greedy longest match over the UTF-8 bytes, a phrase where one starts and a byte
/// otherwise, so any text encodes and decode(encode(s)) == s always; ids decode to their bytes.
/// The phrase list is saved beside a checkpoint as <see cref="FileName"/>.
/// </summary>
public sealed class PhraseTokenizer : ITokenizer
{
    public const string FileName = "tokenizer_phrases.json";
    const int First = ByteTokenizer.Pad + 1;

    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    static readonly UTF8Encoding Lenient = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    readonly byte[][] _bytes;
    // Phrases by first byte, longest first: the first that matches is the longest match.
    readonly List<int>[] _byFirst = new List<int>[256];

    public PhraseTokenizer(IEnumerable<string> phrases)
    {
        ArgumentNullException.ThrowIfNull(phrases);
        Phrases = phrases.ToArray();
        if (Phrases.Distinct(StringComparer.Ordinal).Count() != Phrases.Count)
            throw new ArgumentException("phrases must be distinct", nameof(phrases));
        _bytes = Phrases.Select(p => Strict.GetBytes(p)).ToArray();
        for (int i = 0; i < _bytes.Length; i++)
            if (_bytes[i].Length < 2) throw new ArgumentException($"phrase {i} ('{Phrases[i]}') must be at least two bytes (one byte already has an id)", nameof(phrases));
        for (int i = 0; i < 256; i++) _byFirst[i] = [];
        foreach (int i in Enumerable.Range(0, _bytes.Length).OrderByDescending(i => _bytes[i].Length).ThenBy(i => i))
            _byFirst[_bytes[i][0]].Add(i);
    }

    public IReadOnlyList<string> Phrases { get; }
    public int VocabSize => First + Phrases.Count;
    public int BosId => ByteTokenizer.Bos;
    public int EosId => ByteTokenizer.Eos;
    public int PadId => ByteTokenizer.Pad;

    public int[] Encode(string text, bool addBos, bool addEos)
    {
        ArgumentNullException.ThrowIfNull(text);
        byte[] b = Strict.GetBytes(text);
        var ids = new List<int>(b.Length / 2 + 2);
        if (addBos) ids.Add(BosId);
        for (int i = 0; i < b.Length;)
        {
            int match = -1;
            foreach (int p in _byFirst[b[i]])
                if (b.AsSpan(i).StartsWith(_bytes[p])) { match = p; break; }
            if (match < 0) ids.Add(b[i++]);
            else { ids.Add(First + match); i += _bytes[match].Length; }
        }
        if (addEos) ids.Add(EosId);
        return ids.ToArray();
    }

    /// <summary>Bytes and phrases joined and read as UTF-8 (a cut-off character becomes U+FFFD); specials are skipped; any other id throws.</summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>(ids.Length * 3);
        foreach (int id in ids)
        {
            if ((uint)id < ByteTokenizer.ByteCount) bytes.Add((byte)id);
            else if (id >= First && id < VocabSize) bytes.AddRange(_bytes[id - First]);
            else if (id is not (ByteTokenizer.Bos or ByteTokenizer.Eos or ByteTokenizer.Pad))
                throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the phrase tokenizer's vocabulary (0..{VocabSize - 1})");
        }
        return Lenient.GetString(bytes.ToArray());
    }

    /// <summary>Writes the phrase list to <paramref name="dir"/>/<see cref="FileName"/> (a JSON array of strings).</summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, FileName), JsonSerializer.Serialize(Phrases.ToArray(), DataJson.Lines.StringArray));
    }

    /// <summary>Reads a phrase list written by <see cref="Save"/>; a file that is not a JSON array of distinct strings of two or more bytes is an error naming it.</summary>
    public static PhraseTokenizer Load(string file)
    {
        string[]? phrases;
        try { phrases = JsonSerializer.Deserialize(File.ReadAllText(file), DataJson.Lines.StringArray); }
        catch (JsonException e) { throw new InvalidDataException($"{file}: not a JSON array of phrases ({e.Message})", e); }
        if (phrases == null || phrases.Any(p => p == null)) throw new InvalidDataException($"{file}: not a JSON array of phrases");
        try { return new PhraseTokenizer(phrases); }
        catch (Exception e) when (e is ArgumentException or EncoderFallbackException) { throw new InvalidDataException($"{file}: {e.Message}", e); }
    }
}

using System.Globalization;
using System.Text;

namespace NegDistill.Data;

/// <summary>
/// SentencePiece's BPE segmentation (google/sentencepiece <c>bpe_model.cc</c>, <c>Model::SampleEncode</c>
/// without sampling), written from its documented behaviour: the text is normalised (dummy prefix,
/// spaces escaped to U+2581), split into Unicode characters (user-defined pieces first, as whole
/// symbols), and the adjacent pair whose concatenation is a piece with the highest score is merged
/// repeatedly — on equal scores the leftmost pair first. Symbols that are not pieces become UTF-8
/// byte pieces (byte fallback) or unk; merges into UNUSED pieces are undone at the end.
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers 2.0.1's <c>SentencePieceBpe</c> breaks score ties towards the
/// <em>rightmost</em> pair, so runs such as "ttt" or "}}}" come out as "t"+"tt" instead of
/// SentencePiece's (and Hugging Face's) "tt"+"t". This class is used for encoding so that ids match
/// LLaMA's real tokenizer; see <see cref="LlamaSentencePieceTokenizer"/>.
/// </remarks>
public sealed class SentencePieceBpeEncoder
{
    private const string Meta = "\u2581";

    private readonly Dictionary<string, (int Id, float Score, SentencePieceType Type)> _pieces = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Id, float Score, SentencePieceType Type)>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly int[] _byteIds = new int[256];
    private readonly List<string> _userDefined = new();

    public SentencePieceBpeEncoder(SentencePieceModelProto model)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.ModelType != SentencePieceModelType.Bpe)
        {
            throw new NotSupportedException($"model type {model.ModelType} is not BPE");
        }

        if (model.PrecompiledCharsmap.Length > 0 || model.RemoveExtraWhitespaces || model.TreatWhitespaceAsSuffix)
        {
            throw new NotSupportedException("only the identity normaliser without whitespace folding (as LLaMA uses) is supported");
        }

        Array.Fill(_byteIds, -1);
        for (int id = 0; id < model.Pieces.Count; id++)
        {
            SentencePieceEntry p = model.Pieces[id];
            if (p.Type == SentencePieceType.Byte)
            {
                if (p.Piece.Length == 6 && p.Piece.StartsWith("<0x", StringComparison.Ordinal) && p.Piece[5] == '>'
                    && byte.TryParse(p.Piece.AsSpan(3, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out byte b))
                {
                    _byteIds[b] = id;
                }

                continue;
            }

            if (p.Type is SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused)
            {
                _pieces.TryAdd(p.Piece, (id, p.Score, p.Type));
                if (p.Type == SentencePieceType.UserDefined)
                {
                    _userDefined.Add(p.Piece);
                }
            }
        }

        _userDefined.Sort((x, y) => y.Length.CompareTo(x.Length));
        _lookup = _pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        AddDummyPrefix = model.AddDummyPrefix;
        EscapeWhitespaces = model.EscapeWhitespaces;
        ByteFallback = model.ByteFallback;
        UnkId = model.UnkId;
    }

    public bool AddDummyPrefix { get; }

    public bool EscapeWhitespaces { get; }

    public bool ByteFallback { get; }

    public int UnkId { get; }

    /// <summary>The normalised text the merges run on.</summary>
    public string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
        {
            return text;
        }

        string s = AddDummyPrefix ? " " + text : text;
        return EscapeWhitespaces ? s.Replace(" ", Meta, StringComparison.Ordinal) : s;
    }

    /// <summary>Ids of <paramref name="text"/> (no BOS/EOS).</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        string s = Normalize(text);
        if (s.Length == 0)
        {
            return ids;
        }

        // Initial symbols: user-defined pieces (longest match) or single code points.
        var start = new List<int>();
        var length = new List<int>();
        for (int i = 0; i < s.Length;)
        {
            int len = 0;
            foreach (string u in _userDefined)
            {
                if (string.CompareOrdinal(s, i, u, 0, u.Length) == 0)
                {
                    len = u.Length;
                    break;
                }
            }

            if (len == 0)
            {
                len = char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            }

            start.Add(i);
            length.Add(len);
            i += len;
        }

        int n = start.Count;
        int[] prev = new int[n];
        int[] next = new int[n];
        int[] len0 = length.ToArray();
        int[] pos = start.ToArray();
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Agenda: highest score first, then leftmost (smallest left index) first.
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(Comparer<(float Score, int Left)>.Create(
            (a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        Dictionary<(int Start, int Length), (int LeftStart, int LeftLength, int RightStart, int RightLength)>? revMerge = null;

        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0)
            {
                return;
            }

            int l = len0[left] + len0[right];
            if (!_lookup.TryGetValue(s.AsSpan(pos[left], l), out var piece))
            {
                return;
            }

            agenda.Enqueue((left, right, l), (piece.Score, left));
            if (piece.Type == SentencePieceType.Unused)
            {
                revMerge ??= new();
                revMerge[(pos[left], l)] = (pos[left], len0[left], pos[right], len0[right]);
            }
        }

        for (int i = 1; i < n; i++)
        {
            TryAdd(i - 1, i);
        }

        while (agenda.TryDequeue(out var top, out _))
        {
            if (len0[top.Left] == 0 || len0[top.Right] == 0 || len0[top.Left] + len0[top.Right] != top.Length)
            {
                continue; // stale: one side was merged away since this pair was queued
            }

            len0[top.Left] += len0[top.Right];
            len0[top.Right] = 0;
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0)
            {
                prev[next[top.Right]] = top.Left;
            }

            TryAdd(prev[top.Left], top.Left);
            TryAdd(top.Left, next[top.Left]);
        }

        for (int i = 0; i >= 0 && i < n; i = next[i])
        {
            Emit(s, pos[i], len0[i], ids, revMerge);
        }

        return ids;
    }

    private void Emit(string s, int start, int len, List<int> ids, Dictionary<(int, int), (int, int, int, int)>? revMerge)
    {
        if (_lookup.TryGetValue(s.AsSpan(start, len), out var piece))
        {
            if (piece.Type == SentencePieceType.Unused && revMerge is not null && revMerge.TryGetValue((start, len), out var split))
            {
                Emit(s, split.Item1, split.Item2, ids, revMerge);
                Emit(s, split.Item3, split.Item4, ids, revMerge);
                return;
            }

            if (piece.Type != SentencePieceType.Unused)
            {
                ids.Add(piece.Id);
                return;
            }
        }

        if (!ByteFallback)
        {
            ids.Add(UnkId);
            return;
        }

        Span<byte> utf8 = stackalloc byte[len * 3];
        int count = Encoding.UTF8.GetBytes(s.AsSpan(start, len), utf8);
        for (int i = 0; i < count; i++)
        {
            int id = _byteIds[utf8[i]];
            ids.Add(id >= 0 ? id : UnkId);
        }
    }
}

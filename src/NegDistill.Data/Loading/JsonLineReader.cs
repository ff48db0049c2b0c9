namespace NegDistill.Data;

/// <summary>
/// Splits a byte stream into lines without decoding it, so each JSON line can be handed to the UTF-8
/// JSON parser as raw bytes (which also validates the UTF-8: a bad byte is reported, not replaced).
/// Only one line (plus one read buffer) is held at a time.
/// </summary>
internal static class JsonLineReader
{
    private const int InitialBuffer = 64 * 1024;

    /// <summary>
    /// Yields (1-based line number, line bytes without the terminator). The memory is only valid until
    /// the next iteration step. "\n" and "\r\n" both end a line; a UTF-8 byte-order mark at the start of
    /// the stream is skipped.
    /// </summary>
    public static IEnumerable<(long Line, ReadOnlyMemory<byte> Bytes)> ReadLines(Stream stream) =>
        Split(stream, skipBom: true).Select(l => (l.Line, l.Bytes));

    /// <summary>
    /// The splitter behind <see cref="ReadLines"/>, also telling whether a "\n" ended each line (false
    /// only for a last line cut off without one, which an append-only log may hold after a crash).
    /// </summary>
    public static IEnumerable<(long Line, ReadOnlyMemory<byte> Bytes, bool Terminated)> Split(Stream stream, bool skipBom)
    {
        byte[] buffer = new byte[InitialBuffer];
        int start = 0;
        int end = 0;
        long line = 0;
        bool eof = false;
        bool first = skipBom;

        while (true)
        {
            int nl = Array.IndexOf(buffer, (byte)'\n', start, end - start);
            if (nl >= 0)
            {
                line++;
                int len = nl - start;
                if (len > 0 && buffer[nl - 1] == (byte)'\r')
                {
                    len--;
                }

                yield return (line, StripBom(buffer.AsMemory(start, len), ref first), true);
                start = nl + 1;
                continue;
            }

            if (eof)
            {
                if (end > start)
                {
                    line++;
                    int len = end - start;
                    if (buffer[end - 1] == (byte)'\r')
                    {
                        len--;
                    }

                    yield return (line, StripBom(buffer.AsMemory(start, len), ref first), false);
                }

                yield break;
            }

            // Move the unfinished line to the front; grow when one line fills the buffer.
            if (start > 0)
            {
                Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                end -= start;
                start = 0;
            }

            if (end == buffer.Length)
            {
                Array.Resize(ref buffer, buffer.Length * 2);
            }

            int read = stream.Read(buffer, end, buffer.Length - end);
            if (read == 0)
            {
                eof = true;
            }

            end += read;
        }
    }

    private static ReadOnlyMemory<byte> StripBom(ReadOnlyMemory<byte> bytes, ref bool first)
    {
        if (first)
        {
            first = false;
            ReadOnlySpan<byte> span = bytes.Span;
            if (span.Length >= 3 && span[0] == 0xEF && span[1] == 0xBB && span[2] == 0xBF)
            {
                return bytes[3..];
            }
        }

        return bytes;
    }

    /// <summary>True when the line holds only ASCII whitespace.</summary>
    public static bool IsBlank(ReadOnlySpan<byte> bytes)
    {
        foreach (byte b in bytes)
        {
            if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r'))
            {
                return false;
            }
        }

        return true;
    }
}

#include "singleinsert/models/text_normalizer.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <map>
#include <optional>
#include <vector>

#include "singleinsert/core/error.h"

namespace singleinsert {
namespace {

// ---------------------------------------------------------------- UTF conversions (via ICU's UTF-16)

std::u16string to_utf16(const std::u32string& text) {
  std::u16string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c >= 0x10000) {
      c -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (c >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (c & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(c));
    }
  }
  return out;
}

std::u32string from_utf16(const std::u16string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    char32_t c = text[i];
    if (c >= 0xD800 && c < 0xDC00 && i + 1 < text.size() && text[i + 1] >= 0xDC00 && text[i + 1] < 0xE000) {
      c = 0x10000 + ((c - 0xD800) << 10) + (text[i + 1] - 0xDC00);
      ++i;
    }
    out.push_back(c);
  }
  return out;
}

std::u32string normalize(const std::u32string& text, bool compatibility) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* normalizer =
      compatibility ? unorm2_getNFKCInstance(&status) : unorm2_getNFCInstance(&status);
  if (U_FAILURE(status)) throw Error("ICU normalizer unavailable");
  const std::u16string source = to_utf16(text);
  std::u16string result(source.size() * 3 + 16, u'\0');
  const int32_t length = unorm2_normalize(normalizer, reinterpret_cast<const UChar*>(source.data()),
                                          static_cast<int32_t>(source.size()),
                                          reinterpret_cast<UChar*>(result.data()),
                                          static_cast<int32_t>(result.size()), &status);
  if (U_FAILURE(status)) throw Error("ICU normalization failed");
  result.resize(length);
  return from_utf16(result);
}

// Python's str.lower(): full Unicode lower-case mapping, not locale-dependent.
std::u32string to_lower(const std::u32string& text) {
  const std::u16string source = to_utf16(text);
  std::u16string result(source.size() * 3 + 16, u'\0');
  UErrorCode status = U_ZERO_ERROR;
  const int32_t length =
      u_strToLower(reinterpret_cast<UChar*>(result.data()), static_cast<int32_t>(result.size()),
                   reinterpret_cast<const UChar*>(source.data()), static_cast<int32_t>(source.size()), "", &status);
  if (U_FAILURE(status)) throw Error("ICU lower-casing failed");
  result.resize(length);
  return from_utf16(result);
}

std::u32string to_upper(const std::u32string& text) {
  const std::u16string source = to_utf16(text);
  std::u16string result(source.size() * 3 + 16, u'\0');
  UErrorCode status = U_ZERO_ERROR;
  const int32_t length =
      u_strToUpper(reinterpret_cast<UChar*>(result.data()), static_cast<int32_t>(result.size()),
                   reinterpret_cast<const UChar*>(source.data()), static_cast<int32_t>(source.size()), "", &status);
  if (U_FAILURE(status)) throw Error("ICU upper-casing failed");
  result.resize(length);
  return from_utf16(result);
}

// ---------------------------------------------------------------- single-byte encodings

// Windows-1252 for bytes 0x80-0x9F; ftfy's "sloppy" variant maps the five undefined bytes to
// the C1 control characters with the same value. 0xA0-0xFF are Latin-1.
constexpr char32_t kCp1252High[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

std::optional<uint8_t> encode_sloppy_cp1252(char32_t c) {
  if (c < 0x80 || (c >= 0xA0 && c <= 0xFF)) return static_cast<uint8_t>(c);
  for (int i = 0; i < 32; ++i)
    if (kCp1252High[i] == c) return static_cast<uint8_t>(0x80 + i);
  return std::nullopt;
}

std::optional<uint8_t> encode_latin1(char32_t c) {
  if (c <= 0xFF) return static_cast<uint8_t>(c);
  return std::nullopt;
}

// Strict UTF-8 decoding of a byte string; nullopt when it is not valid UTF-8.
std::optional<std::u32string> decode_utf8_strict(const std::string& bytes) {
  std::u32string out;
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b0 = static_cast<uint8_t>(bytes[i]);
    int length = 0;
    char32_t c = 0;
    if (b0 < 0x80) { length = 1; c = b0; }
    else if (b0 >= 0xC2 && b0 <= 0xDF) { length = 2; c = b0 & 0x1F; }
    else if (b0 >= 0xE0 && b0 <= 0xEF) { length = 3; c = b0 & 0x0F; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { length = 4; c = b0 & 0x07; }
    else return std::nullopt;
    if (i + length > bytes.size()) return std::nullopt;
    for (int k = 1; k < length; ++k) {
      const auto b = static_cast<uint8_t>(bytes[i + k]);
      if ((b & 0xC0) != 0x80) return std::nullopt;
      c = (c << 6) | (b & 0x3F);
    }
    if ((length == 3 && (c < 0x800 || (c >= 0xD800 && c < 0xE000))) || (length == 4 && (c < 0x10000 || c > 0x10FFFF)))
      return std::nullopt;
    out.push_back(c);
    i += length;
  }
  return out;
}

// ---------------------------------------------------------------- ftfy's fixes

// Length of a UTF-8 sequence that `text[at..]` spells when read as sloppy Windows-1252, or 0.
size_t mojibake_sequence_length(const std::u32string& text, size_t at) {
  const auto lead = encode_sloppy_cp1252(text[at]);
  if (!lead || *lead < 0xC2 || *lead > 0xF4) return 0;
  const size_t length = *lead <= 0xDF ? 2 : (*lead <= 0xEF ? 3 : 4);
  if (at + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    const auto byte = encode_sloppy_cp1252(text[at + k]);
    if (!byte || *byte < 0x80 || *byte > 0xBF) return 0;
  }
  return length;
}

bool looks_like_mojibake(const std::u32string& text) {
  for (size_t i = 0; i < text.size(); ++i)
    if (mojibake_sequence_length(text, i) > 0) return true;
  return false;
}

template <typename Encoder>
std::optional<std::u32string> reencode_as_utf8(const std::u32string& text, Encoder encode) {
  std::string bytes;
  for (char32_t c : text) {
    const auto byte = encode(c);
    if (!byte) return std::nullopt;
    bytes.push_back(static_cast<char>(*byte));
  }
  return decode_utf8_strict(bytes);
}

// UTF-8 that was decoded as Latin-1 or Windows-1252 ("cafÃ©" -> "café"): the whole text when
// it re-encodes cleanly, otherwise each mis-decoded run on its own.
std::u32string fix_encoding(const std::u32string& text) {
  if (!looks_like_mojibake(text)) return text;
  if (auto fixed = reencode_as_utf8(text, encode_latin1)) return *fixed;
  if (auto fixed = reencode_as_utf8(text, encode_sloppy_cp1252)) return *fixed;
  std::u32string out;
  size_t i = 0;
  while (i < text.size()) {
    size_t end = i;
    while (end < text.size()) {
      const size_t length = mojibake_sequence_length(text, end);
      if (length == 0) break;
      end += length;
    }
    if (end > i) {
      const auto fixed = reencode_as_utf8(text.substr(i, end - i), encode_sloppy_cp1252);
      out += fixed ? *fixed : text.substr(i, end - i);
      i = end;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

std::u32string fix_c1_controls(const std::u32string& text) {
  std::u32string out = text;
  for (char32_t& c : out)
    if (c >= 0x80 && c <= 0x9F) c = kCp1252High[c - 0x80];
  return out;
}

const std::map<char32_t, std::u32string>& ligatures() {
  static const std::map<char32_t, std::u32string> table = {
      {0x0132, U"IJ"}, {0x0133, U"ij"}, {0x0149, U"\u02BCn"}, {0x01F1, U"DZ"}, {0x01F2, U"Dz"},
      {0x01F3, U"dz"}, {0x01C4, U"D\u017D"}, {0x01C5, U"D\u017E"}, {0x01C6, U"d\u017E"},
      {0x01C7, U"LJ"}, {0x01C8, U"Lj"}, {0x01C9, U"lj"}, {0x01CA, U"NJ"}, {0x01CB, U"Nj"},
      {0x01CC, U"nj"}, {0xFB00, U"ff"}, {0xFB01, U"fi"}, {0xFB02, U"fl"}, {0xFB03, U"ffi"},
      {0xFB04, U"ffl"}, {0xFB05, U"\u017Ft"}, {0xFB06, U"st"}};
  return table;
}

std::u32string fix_latin_ligatures(const std::u32string& text) {
  std::u32string out;
  for (char32_t c : text) {
    auto it = ligatures().find(c);
    if (it != ligatures().end()) out += it->second;
    else out.push_back(c);
  }
  return out;
}

// Full-width and half-width forms (U+FF01-U+FFEF) to their NFKC equivalents, and the
// ideographic space to a plain space.
std::u32string fix_character_width(const std::u32string& text) {
  std::u32string out;
  for (char32_t c : text) {
    if (c == 0x3000) out.push_back(U' ');
    else if (c >= 0xFF01 && c < 0xFFF0) out += normalize(std::u32string(1, c), /*compatibility=*/true);
    else out.push_back(c);
  }
  return out;
}

std::u32string uncurl_quotes(const std::u32string& text) {
  std::u32string out = text;
  for (char32_t& c : out) {
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = U'\'';
    else if (c >= 0x201C && c <= 0x201F) c = U'"';
  }
  return out;
}

std::u32string fix_line_breaks(const std::u32string& text) {
  std::u32string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == U'\r' && i + 1 < text.size() && text[i + 1] == U'\n') continue;
    out.push_back(c == U'\r' || c == 0x2028 || c == 0x2029 || c == 0x85 ? U'\n' : c);
  }
  return out;
}

// ANSI terminal escapes: ESC [ digits-and-semicolons letter.
std::u32string remove_terminal_escapes(const std::u32string& text) {
  std::u32string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == 0x1B && i + 1 < text.size() && text[i + 1] == U'[') {
      size_t j = i + 2;
      while (j < text.size() && ((text[j] >= U'0' && text[j] <= U'9') || text[j] == U';')) ++j;
      if (j < text.size() && ((text[j] >= U'a' && text[j] <= U'z') || (text[j] >= U'A' && text[j] <= U'Z'))) {
        i = j;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

bool is_removed_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

std::u32string remove_control_chars(const std::u32string& text) {
  std::u32string out;
  for (char32_t c : text)
    if (!is_removed_control(c)) out.push_back(c);
  return out;
}

// HTML entities: numeric ones as html.unescape reads them, and the named entities that occur in
// prompts (ASCII punctuation, typography and the Latin-1 letters). Upper-case spellings of
// lower-case names give the upper-case character, as ftfy adds them.
const std::map<std::u32string, std::u32string>& named_entities() {
  static const std::map<std::u32string, std::u32string> table = [] {
    std::map<std::u32string, std::u32string> t = {
        {U"amp", U"&"},        {U"AMP", U"&"},         {U"lt", U"<"},          {U"LT", U"<"},
        {U"gt", U">"},         {U"GT", U">"},          {U"quot", U"\""},       {U"QUOT", U"\""},
        {U"apos", U"'"},       {U"OElig", U"\u0152"},  {U"oelig", U"\u0153"},  {U"Scaron", U"\u0160"},
        {U"scaron", U"\u0161"}, {U"Yuml", U"\u0178"},  {U"fnof", U"\u0192"},   {U"circ", U"\u02C6"},
        {U"tilde", U"\u02DC"}, {U"ensp", U"\u2002"},   {U"emsp", U"\u2003"},   {U"thinsp", U"\u2009"},
        {U"zwnj", U"\u200C"},  {U"zwj", U"\u200D"},    {U"ndash", U"\u2013"},  {U"mdash", U"\u2014"},
        {U"lsquo", U"\u2018"}, {U"rsquo", U"\u2019"},  {U"sbquo", U"\u201A"},  {U"ldquo", U"\u201C"},
        {U"rdquo", U"\u201D"}, {U"bdquo", U"\u201E"},  {U"dagger", U"\u2020"}, {U"Dagger", U"\u2021"},
        {U"bull", U"\u2022"},  {U"hellip", U"\u2026"}, {U"permil", U"\u2030"}, {U"prime", U"\u2032"},
        {U"Prime", U"\u2033"}, {U"lsaquo", U"\u2039"}, {U"rsaquo", U"\u203A"}, {U"euro", U"\u20AC"},
        {U"trade", U"\u2122"}, {U"larr", U"\u2190"},   {U"rarr", U"\u2192"},   {U"uarr", U"\u2191"},
        {U"darr", U"\u2193"},  {U"hearts", U"\u2665"}, {U"star", U"\u2606"},   {U"starf", U"\u2605"}};
    // Latin-1: U+00A0 to U+00FF in order.
    const char32_t* latin1[] = {
        U"nbsp",   U"iexcl",  U"cent",   U"pound",  U"curren", U"yen",    U"brvbar", U"sect",
        U"uml",    U"copy",   U"ordf",   U"laquo",  U"not",    U"shy",    U"reg",    U"macr",
        U"deg",    U"plusmn", U"sup2",   U"sup3",   U"acute",  U"micro",  U"para",   U"middot",
        U"cedil",  U"sup1",   U"ordm",   U"raquo",  U"frac14", U"frac12", U"frac34", U"iquest",
        U"Agrave", U"Aacute", U"Acirc",  U"Atilde", U"Auml",   U"Aring",  U"AElig",  U"Ccedil",
        U"Egrave", U"Eacute", U"Ecirc",  U"Euml",   U"Igrave", U"Iacute", U"Icirc",  U"Iuml",
        U"ETH",    U"Ntilde", U"Ograve", U"Oacute", U"Ocirc",  U"Otilde", U"Ouml",   U"times",
        U"Oslash", U"Ugrave", U"Uacute", U"Ucirc",  U"Uuml",   U"Yacute", U"THORN",  U"szlig",
        U"agrave", U"aacute", U"acirc",  U"atilde", U"auml",   U"aring",  U"aelig",  U"ccedil",
        U"egrave", U"eacute", U"ecirc",  U"euml",   U"igrave", U"iacute", U"icirc",  U"iuml",
        U"eth",    U"ntilde", U"ograve", U"oacute", U"ocirc",  U"otilde", U"ouml",   U"divide",
        U"oslash", U"ugrave", U"uacute", U"ucirc",  U"uuml",   U"yacute", U"thorn",  U"yuml"};
    for (int i = 0; i < 96; ++i) t[latin1[i]] = std::u32string(1, static_cast<char32_t>(0xA0 + i));
    return t;
  }();
  return table;
}

std::optional<std::u32string> unescape_entity(const std::u32string& body) {  // body without '&' and ';'
  if (!body.empty() && body[0] == U'#') {
    const bool hex = body.size() > 1 && (body[1] == U'x' || body[1] == U'X');
    const std::u32string digits = body.substr(hex ? 2 : 1);
    if (digits.empty()) return std::nullopt;
    uint64_t value = 0;
    for (char32_t d : digits) {
      int v = -1;
      if (d >= U'0' && d <= U'9') v = static_cast<int>(d - U'0');
      else if (hex && d >= U'a' && d <= U'f') v = static_cast<int>(d - U'a' + 10);
      else if (hex && d >= U'A' && d <= U'F') v = static_cast<int>(d - U'A' + 10);
      if (v < 0) return std::nullopt;
      value = std::min<uint64_t>(value * (hex ? 16 : 10) + v, 0x110000);
    }
    // html.unescape: C1 values are read as Windows-1252, invalid code points as U+FFFD.
    if (value >= 0x80 && value <= 0x9F) return std::u32string(1, kCp1252High[value - 0x80]);
    if (value == 0 || value > 0x10FFFF || (value >= 0xD800 && value < 0xE000)) return std::u32string(1, 0xFFFD);
    return std::u32string(1, static_cast<char32_t>(value));
  }
  const auto& table = named_entities();
  if (auto it = table.find(body); it != table.end()) return it->second;
  const std::u32string lower = to_lower(body);
  if (lower != body && to_upper(lower) == body)
    if (auto it = table.find(lower); it != table.end()) return to_upper(it->second);
  return std::nullopt;
}

bool is_entity_char(char32_t c) {
  return (c >= U'0' && c <= U'9') || (c >= U'a' && c <= U'z') || (c >= U'A' && c <= U'Z');
}

std::u32string unescape_html(const std::u32string& text) {
  std::u32string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == U'&') {
      size_t j = i + 1;
      if (j < text.size() && text[j] == U'#') ++j;
      const size_t start = j;
      while (j < text.size() && j - start < 24 && is_entity_char(text[j])) ++j;
      if (j > start && j < text.size() && text[j] == U';') {
        const auto replacement = unescape_entity(text.substr(i + 1, j - i - 1));
        if (replacement && replacement->find(U';') == std::u32string::npos) {
          out += *replacement;
          i = j + 1;
          continue;
        }
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

std::u32string fix_segment(std::u32string text, bool unescape) {
  // ftfy repeats its fixes until the text stops changing.
  for (int round = 0; round < 16; ++round) {
    const std::u32string before = text;
    if (unescape) text = unescape_html(text);
    text = fix_encoding(text);
    text = fix_c1_controls(text);
    text = fix_latin_ligatures(text);
    text = fix_character_width(text);
    text = uncurl_quotes(text);
    text = fix_line_breaks(text);
    text = remove_terminal_escapes(text);
    text = remove_control_chars(text);
    text = normalize(text, /*compatibility=*/false);
    if (text == before) break;
  }
  return text;
}

}  // namespace

std::u32string utf8_to_utf32(const std::string& utf8) {
  std::u32string out;
  size_t i = 0;
  while (i < utf8.size()) {
    const auto b0 = static_cast<uint8_t>(utf8[i]);
    const size_t length = b0 < 0x80 ? 1 : b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
    std::optional<std::u32string> decoded;
    if (i + length <= utf8.size()) decoded = decode_utf8_strict(utf8.substr(i, length));
    if (decoded && decoded->size() == 1) {
      out += *decoded;
      i += length;
    } else {
      out.push_back(0xFFFD);  // invalid byte, as Python's errors="replace"
      ++i;
    }
  }
  return out;
}

std::string utf32_to_utf8(const std::u32string& text) {
  std::string out;
  for (char32_t c : text) {
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if (c < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else if (c < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (c >> 12)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (c >> 18)));
      out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return out;
}

// str.isspace(): the characters Python's re treats as \s in str patterns.
bool is_python_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

bool is_unicode_letter(char32_t c) {
  const auto category = u_charType(static_cast<UChar32>(c));
  return category == U_UPPERCASE_LETTER || category == U_LOWERCASE_LETTER || category == U_TITLECASE_LETTER ||
         category == U_MODIFIER_LETTER || category == U_OTHER_LETTER;
}

bool is_unicode_number(char32_t c) {
  const auto category = u_charType(static_cast<UChar32>(c));
  return category == U_DECIMAL_DIGIT_NUMBER || category == U_LETTER_NUMBER || category == U_OTHER_NUMBER;
}

std::string fix_text(const std::string& utf8) {
  const std::u32string text = utf8_to_utf32(utf8);
  std::u32string out;
  // ftfy fixes line by line; once a line contains '<' it stops unescaping HTML for the rest,
  // since the text may be real HTML.
  bool unescape = true;
  size_t position = 0;
  while (position < text.size()) {
    size_t end = text.find(U'\n', position);
    end = end == std::u32string::npos ? text.size() : end + 1;
    const std::u32string segment = text.substr(position, end - position);
    if (segment.find(U'<') != std::u32string::npos) unescape = false;
    out += fix_segment(segment, unescape);
    position = end;
  }
  return utf32_to_utf8(out);
}

std::string normalize_clip_text(const std::string& utf8) {
  const std::u32string fixed = utf8_to_utf32(fix_text(utf8));
  std::u32string cleaned;
  bool pending_space = false;
  for (char32_t c : fixed) {
    if (is_python_whitespace(c)) {
      pending_space = !cleaned.empty();
      continue;
    }
    if (pending_space) cleaned.push_back(U' ');
    pending_space = false;
    cleaned.push_back(c);
  }
  return utf32_to_utf8(to_lower(cleaned));
}

}  // namespace singleinsert

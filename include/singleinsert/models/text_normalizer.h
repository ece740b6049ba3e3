#pragma once
// The text clean-up that Hugging Face's CLIPTokenizer applies before BPE when ftfy is
// installed: ftfy.fix_text (the fixes that change prompts: HTML entities, mojibake, C1
// controls, Latin ligatures, full-width forms, curly quotes, line breaks, terminal escapes,
// control characters, NFC), then whitespace collapsing and Unicode lower-casing.
#include <string>

namespace singleinsert {

// ftfy.fix_text's default fixes, on UTF-8 text. Invalid UTF-8 bytes become U+FFFD.
std::string fix_text(const std::string& utf8);

// whitespace_clean(fix_text(text)).lower(), as CLIPTokenizer._tokenize does.
std::string normalize_clip_text(const std::string& utf8);

// Unicode helpers shared with the tokenizer's pre-splitting.
std::u32string utf8_to_utf32(const std::string& utf8);
std::string utf32_to_utf8(const std::u32string& text);
bool is_python_whitespace(char32_t c);
bool is_unicode_letter(char32_t c);  // \p{L}
bool is_unicode_number(char32_t c);  // \p{N}

}  // namespace singleinsert

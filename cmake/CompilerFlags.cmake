# Warnings for our own targets only; LibTorch's headers are included as system headers.
add_library(singleinsert_warnings INTERFACE)
target_compile_options(singleinsert_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter)

# Exactness matters more than the last percent: never let the compiler reassociate float math.
add_compile_options(-fno-fast-math)

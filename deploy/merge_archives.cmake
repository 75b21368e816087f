# Merges static archives into one: cmake -DAR=ar -DOUT=out.a "-DIN=a.a;b.a" -P merge_archives.cmake
# (GNU ar's MRI script: CREATE, ADDLIB each input, SAVE). Used to put the CUDA runtime's objects
# into the installed libtensord_common.a.
get_filename_component(_dir "${OUT}" DIRECTORY)
file(MAKE_DIRECTORY "${_dir}")
set(_script "CREATE ${OUT}.tmp\n")
foreach(_lib IN LISTS IN)
  string(APPEND _script "ADDLIB ${_lib}\n")
endforeach()
string(APPEND _script "SAVE\nEND\n")
file(WRITE "${OUT}.mri" "${_script}")
file(REMOVE "${OUT}.tmp")
execute_process(COMMAND "${AR}" -M INPUT_FILE "${OUT}.mri" RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "merging ${IN} into ${OUT}: ${AR} -M failed (${_rc})")
endif()
file(RENAME "${OUT}.tmp" "${OUT}")

// Progressive enhancement: a "Copy" button next to a value shown once. Without JavaScript the
// button stays hidden and the read-only field can be selected by hand.
document.querySelectorAll("button[data-copy-target]").forEach(function (button) {
  var field = document.getElementById(button.getAttribute("data-copy-target"));
  if (!field || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(field.value).then(function () {
      button.textContent = "Copied";
    }, function () {
      field.select();
    });
  });
});

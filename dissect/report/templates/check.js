(function(){
  var root=document.documentElement, errors=[];
  window.addEventListener('error',function(e){
    if(e && e.target && e.target.tagName){return;}
    errors.push(String(e.message||e));root.setAttribute('data-js-errors',errors.join(' | '));
  },true);
  window.addEventListener('load',function(){
    var imgs=document.images,bad=[];
    for(var i=0;i<imgs.length;i++){if(imgs[i].hasAttribute('src')&&(!imgs[i].complete||imgs[i].naturalWidth===0)){bad.push(imgs[i].getAttribute('src'));}}
    root.setAttribute('data-images',String(imgs.length));
    root.setAttribute('data-broken-images',bad.join(' '));
    root.setAttribute('data-ready',bad.length?'broken':'ok');
    if(bad.length){var w=document.getElementById('brokenwarn');if(w){w.textContent=bad.length+' image(s) failed to load: '+bad.join(', ');w.hidden=false;}}
  });
})();
